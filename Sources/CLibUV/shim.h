#ifndef WOODPECKER_CLIBUV_SHIM_H
#define WOODPECKER_CLIBUV_SHIM_H
#include <uv.h>
#endif
