/* Status codes and their descriptions. */
#include <stdarg.h>
#include <stdio.h>

#include "fedc/core.h"

const char *fedc_strerror(int status)
{
    switch (status) {
    case FEDC_OK: return "success";
    case FEDC_ERR_NOMEM: return "out of memory";
    case FEDC_ERR_INVALID: return "invalid argument";
    case FEDC_ERR_IO: return "input/output error";
    case FEDC_ERR_FORMAT: return "malformed data";
    case FEDC_ERR_PROTOCOL: return "protocol violation";
    case FEDC_ERR_TOO_LARGE: return "size limit exceeded";
    case FEDC_ERR_SHAPE: return "tensor layout mismatch";
    case FEDC_ERR_NONFINITE: return "non-finite value";
    case FEDC_ERR_RANGE: return "value out of range";
    case FEDC_ERR_TIMEOUT: return "timed out";
    case FEDC_ERR_CLOSED: return "connection closed";
    case FEDC_ERR_CONNECT: return "could not connect";
    case FEDC_ERR_ADDRINUSE: return "address already in use";
    case FEDC_ERR_NOTFOUND: return "not found";
    case FEDC_ERR_UNSUPPORTED: return "not supported";
    case FEDC_ERR_CANCELLED: return "cancelled";
    case FEDC_ERR_VERSION: return "incompatible protocol version";
    case FEDC_ERR_REJECTED: return "rejected by peer";
    case FEDC_ERR_NOTREACHED: return "goal not reached";
    case FEDC_ERR_DEVICE: return "compute device unavailable";
    default: return "unknown error";
    }
}

int fedc_set_error(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}
