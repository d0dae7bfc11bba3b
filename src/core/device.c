/* Compute devices: parsing "cpu" / "cuda[:N]" and checking availability. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#ifdef FEDC_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

int fedc_device_parse(const char *text, fedc_device *out, char *err, size_t errlen)
{
    fedc_device d = {FEDC_DEVICE_CPU, 0};
    if (!text || !out) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "device: NULL argument");
    if (!strcmp(text, "cpu")) {
        *out = d;
        return FEDC_OK;
    }
    if (!strncmp(text, "cuda", 4) && (text[4] == '\0' || text[4] == ':')) {
        d.type = FEDC_DEVICE_CUDA;
        if (text[4] == ':') {
            const char *digits = text + 5;
            char *end = NULL;
            errno = 0;
            long v = strtol(digits, &end, 10);
            if (*digits < '0' || *digits > '9' || *end != '\0' || errno || v > 1023)
                return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                      "device '%s': the GPU index after 'cuda:' must be a number 0..1023",
                                      text);
            d.index = (int)v;
        }
        *out = d;
        return FEDC_OK;
    }
    return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "unknown device '%s' (expected cpu, cuda or cuda:N)",
                          text);
}

void fedc_device_format(fedc_device d, char *buf, size_t len)
{
    if (!buf || !len) return;
    if (d.type == FEDC_DEVICE_CUDA)
        snprintf(buf, len, "cuda:%d", d.index);
    else
        snprintf(buf, len, "cpu");
}

int fedc_device_cuda_built(void)
{
#ifdef FEDC_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int fedc_device_check(fedc_device d, char *name, size_t namelen, char *err, size_t errlen)
{
    if (d.type == FEDC_DEVICE_CPU) {
        if (name && namelen) snprintf(name, namelen, "cpu");
        return FEDC_OK;
    }
    if (d.type != FEDC_DEVICE_CUDA)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "unknown device type");
#ifdef FEDC_HAVE_CUDA
    return fedc__cuda_device_check(d.index, name, namelen, err, errlen);
#else
    return fedc_set_error(err, errlen, FEDC_ERR_DEVICE,
                          "cuda:%d: this build of fedc has no CUDA backend (configure with -DFEDC_CUDA=ON)",
                          d.index);
#endif
}
