# Woodpecker for Swift. `make run` starts the broker on localhost:9092; `make test` runs every test.
SWIFT ?= swift
DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:9092
# CI treats warnings as errors.
SWIFT_FLAGS ?= -Xswiftc -warnings-as-errors

.PHONY: setup setup-test build build-debug run test unit compat bench clean cluster cluster-stop

setup:
	@scripts/setup.sh build

setup-test:
	@scripts/setup.sh test

build: setup
	$(SWIFT) build -c release $(SWIFT_FLAGS) --product woodpecker

run: build
	@echo "starting woodpecker broker on $(LISTEN) (data in $(DATA_DIR), embedded metadata, local storage)"
	.build/release/woodpecker broker --listen $(LISTEN) --data-dir $(DATA_DIR)

# Unit and integration tests (Swift), then the compat suites against the release binary.
# Tests run one at a time: several assert that waits end promptly (woken, not polled), which 2 busy cores
# would blur. The compat suites drive the debug binary built with the tests (no second, release build in CI).
test: setup-test
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests
	$(SWIFT) test --skip-build --no-parallel
	compat/run-all.sh .build/debug/woodpecker

# A QuorumBuffer cluster on loopback: etcd, SeaweedFS, three LogStores and a broker on localhost:9092.
cluster: build
	deploy/local-cluster.sh start

cluster-stop:
	deploy/local-cluster.sh stop

unit:
	$(SWIFT) build --build-tests && $(SWIFT) test --skip-build

compat:
	compat/run-all.sh .build/release/woodpecker

bench: setup-test
	$(SWIFT) build -c release --product woodpecker
	compat/bench/run.sh $(if $(QUICK),--quick,)

clean:
	rm -rf .build

# Regenerates Sources/KafkaProtocol/Generated from Kafka's message JSON (../shared/kafka-messages).
.PHONY: codegen
codegen:
	$(SWIFT) run KafkaCodegen $(or $(KAFKA_MESSAGES),../shared/kafka-messages) Sources/KafkaProtocol/Generated
