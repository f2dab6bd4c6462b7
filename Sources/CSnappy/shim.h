#ifndef WOODPECKER_CSNAPPY_SHIM_H
#define WOODPECKER_CSNAPPY_SHIM_H
#include <snappy-c.h>
#endif
