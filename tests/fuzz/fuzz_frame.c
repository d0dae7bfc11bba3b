/*
 * libFuzzer target: the frame layer (src/proto/frame.c).
 *
 * The input is read as a frame stream: a 5-byte header goes to
 * fedc__frame_header_decode (against a limit taken from the stream, so the
 * size checks are explored too), and the payload it announces (whatever of
 * it the input holds) is decoded as a MESSAGE with fedc__msg_unpack; a
 * TensorHeader body goes to fedc__tensor_header_check, a Hello to
 * fedc__node_id_valid, as the receivers do. Frames repeat until the input
 * runs out. Checks the contracts: a decoded header has a known type and a
 * length in 1 .. max_frame; a header that passes the tensor check has
 * nbytes = numel * dtype size with no overflow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/tensor.h"
#include "proto/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tensor(const Fedc__V1__TensorHeader *h)
{
    char err[FEDC_ERRMSG_MAX];
    if (fedc__tensor_header_check(h, err, sizeof err) != FEDC_OK) return;
    /* Recompute the size with 128-bit arithmetic: a header that passes must
     * announce exactly numel * dtype size. */
    unsigned __int128 n = fedc_dtype_size((fedc_dtype)h->dtype);
    if (n == 0 || h->n_shape > FEDC_MAX_DIMS || !h->name || !h->name[0]) abort();
    for (size_t i = 0; i < h->n_shape; i++) {
        n *= h->shape[i];
        if (n > UINT64_MAX) abort();
    }
    if ((uint64_t)n != h->nbytes) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FEDC_ERRMSG_MAX];
    /* The first byte picks the limit: the default or FEDC_MIN_MAX_FRAME
     * shifted down, so that small inputs reach the "too large" path. */
    if (size < 1) return 0;
    uint32_t max_frame = data[0] & 0x80 ? FEDC_DEFAULT_MAX_FRAME : FEDC_MIN_MAX_FRAME >> (data[0] & 31);
    data++;
    size--;
    while (size >= FEDC_FRAME_HEADER_BYTES) {
        uint8_t type = 0;
        uint32_t len = 0;
        int rc = fedc__frame_header_decode(data, max_frame, &type, &len, err, sizeof err);
        data += FEDC_FRAME_HEADER_BYTES;
        size -= FEDC_FRAME_HEADER_BYTES;
        if (rc != FEDC_OK) {
            if (err[0] == '\0') abort();
            return 0;
        }
        if ((type != FEDC_FRAME_MESSAGE && type != FEDC_FRAME_DATA) || len == 0 || len > max_frame) abort();
        size_t take = len < size ? len : size;
        if (type == FEDC_FRAME_MESSAGE) {
            fedc__msg *m = NULL;
            if (fedc__msg_unpack(data, take, &m, err, sizeof err) == FEDC_OK) {
                (void)fedc__msg_name(m);
                if (m->body_case == FEDC__V1__MESSAGE__BODY_TENSOR) check_tensor(m->tensor);
                if (m->body_case == FEDC__V1__MESSAGE__BODY_HELLO && m->hello->node_id)
                    (void)fedc__node_id_valid(m->hello->node_id);
                fedc__msg_free(m);
            }
        }
        data += take;
        size -= take;
    }
    return 0;
}
