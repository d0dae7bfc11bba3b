/* Frame headers and protobuf message packing. */
#include <stdlib.h>
#include <string.h>

#include "fedc/tensor.h"
#include "proto/frame.h"

void fedc__frame_header_encode(uint8_t out[FEDC_FRAME_HEADER_BYTES], uint8_t type, uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    out[4] = type;
}

int fedc__frame_header_decode(const uint8_t in[FEDC_FRAME_HEADER_BYTES], uint32_t max_frame, uint8_t *type,
                              uint32_t *len, char *err, size_t errlen)
{
    uint32_t n = ((uint32_t)in[0] << 24) | ((uint32_t)in[1] << 16) | ((uint32_t)in[2] << 8) | in[3];
    if (in[4] != FEDC_FRAME_MESSAGE && in[4] != FEDC_FRAME_DATA)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "unknown frame type %u", in[4]);
    if (n > max_frame)
        return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                              "frame of %u bytes exceeds the limit of %u bytes", n, max_frame);
    if (n == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "empty %s frame",
                              in[4] == FEDC_FRAME_MESSAGE ? "MESSAGE" : "DATA");
    *type = in[4];
    *len = n;
    return FEDC_OK;
}

int fedc__frame_pack_message(const fedc__msg *m, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    size_t n = fedc__v1__message__get_packed_size(m);
    if (n > UINT32_MAX)
        return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "message of %zu bytes is too large", n);
    uint8_t *buf = malloc(FEDC_FRAME_HEADER_BYTES + n);
    if (!buf) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    fedc__frame_header_encode(buf, FEDC_FRAME_MESSAGE, (uint32_t)n);
    fedc__v1__message__pack(m, buf + FEDC_FRAME_HEADER_BYTES);
    *out = buf;
    *outlen = FEDC_FRAME_HEADER_BYTES + n;
    return FEDC_OK;
}

int fedc__msg_unpack(const uint8_t *buf, size_t len, fedc__msg **out, char *err, size_t errlen)
{
    fedc__msg *m = fedc__v1__message__unpack(NULL, len, buf);
    if (!m)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "malformed message: %zu bytes that do not decode as fedc.v1.Message", len);
    if (m->body_case == FEDC__V1__MESSAGE__BODY__NOT_SET) {
        fedc__v1__message__free_unpacked(m, NULL);
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "message with no body");
    }
    *out = m;
    return FEDC_OK;
}

void fedc__msg_free(fedc__msg *m)
{
    if (m) fedc__v1__message__free_unpacked(m, NULL);
}

const char *fedc__msg_name(const fedc__msg *m)
{
    switch (m ? m->body_case : 0) {
    case FEDC__V1__MESSAGE__BODY_HELLO: return "hello";
    case FEDC__V1__MESSAGE__BODY_WELCOME: return "welcome";
    case FEDC__V1__MESSAGE__BODY_TENSOR: return "tensor";
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS: return "get_parameters_ins";
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES: return "get_parameters_res";
    case FEDC__V1__MESSAGE__BODY_FIT_INS: return "fit_ins";
    case FEDC__V1__MESSAGE__BODY_FIT_RES: return "fit_res";
    case FEDC__V1__MESSAGE__BODY_EVALUATE_INS: return "evaluate_ins";
    case FEDC__V1__MESSAGE__BODY_EVALUATE_RES: return "evaluate_res";
    case FEDC__V1__MESSAGE__BODY_FAILURE: return "failure";
    case FEDC__V1__MESSAGE__BODY_ERROR: return "error";
    case FEDC__V1__MESSAGE__BODY_SHUTDOWN: return "shutdown";
    case FEDC__V1__MESSAGE__BODY_SECAGG: return "secagg";
    case FEDC__V1__MESSAGE__BODY_AUTH_CHALLENGE: return "auth_challenge";
    case FEDC__V1__MESSAGE__BODY_AUTH_RESPONSE: return "auth_response";
    default: return "unknown";
    }
}

int fedc__dtype_valid(int wire_dtype)
{
    return fedc_dtype_size((fedc_dtype)wire_dtype) != 0;
}

void fedc__tensor_header_init(Fedc__V1__TensorHeader *h, const fedc_tensor *t, uint64_t *shape_buf)
{
    fedc__v1__tensor_header__init(h);
    h->name = t->name;
    h->dtype = (Fedc__V1__DType)t->dtype;
    for (int i = 0; i < t->ndim; i++) shape_buf[i] = (uint64_t)t->shape[i];
    h->n_shape = (size_t)t->ndim;
    h->shape = shape_buf;
    h->nbytes = t->nbytes;
}

int fedc__tensor_header_check(const Fedc__V1__TensorHeader *h, char *err, size_t errlen)
{
    if (!h->name || !h->name[0] || strlen(h->name) >= FEDC_MAX_NAME)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "tensor header with an empty or over-long name");
    if (!fedc__dtype_valid((int)h->dtype))
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "tensor '%s': unknown dtype %d", h->name,
                              (int)h->dtype);
    if (h->n_shape > FEDC_MAX_DIMS)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "tensor '%s': %zu dimensions (at most %d)",
                              h->name, h->n_shape, FEDC_MAX_DIMS);
    uint64_t n = fedc_dtype_size((fedc_dtype)h->dtype);
    for (size_t i = 0; i < h->n_shape; i++) {
        if (h->shape[i] > INT64_MAX || (h->shape[i] && n > UINT64_MAX / 2 / h->shape[i]))
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "tensor '%s': shape overflows", h->name);
        n *= h->shape[i];
    }
    if (n != h->nbytes)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "tensor '%s': nbytes %llu does not match dtype and shape (%llu)", h->name,
                              (unsigned long long)h->nbytes, (unsigned long long)n);
    return FEDC_OK;
}

int fedc__node_id_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 128) return 0;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}
