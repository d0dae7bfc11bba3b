/* Framing of the wire protocol (docs/protocol.md, "Frames").
 *
 * A frame is a 5-byte header, a 32-bit big-endian payload length followed
 * by a one-byte frame type, then the payload. MESSAGE payloads are one
 * protobuf-encoded fedc.v1.Message; DATA payloads are raw tensor bytes that
 * continue the tensor announced by the last TensorHeader. */
#ifndef FEDC_PROTO_FRAME_H
#define FEDC_PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"

#define FEDC_PROTOCOL_VERSION   1u
#define FEDC_FRAME_HEADER_BYTES 5u
#define FEDC_FRAME_MESSAGE      1u
#define FEDC_FRAME_DATA         2u
/* Default largest frame a peer accepts (header excluded). */
#define FEDC_DEFAULT_MAX_FRAME (16u << 20)
/* Smallest max_frame_bytes a peer may announce (every peer must take a
 * full DATA chunk). */
#define FEDC_MIN_MAX_FRAME (1u << 20)
/* Tensor data is sent in DATA frames of at most this many bytes. */
#define FEDC_CHUNK_BYTES (1u << 20)

typedef Fedc__V1__Message fedc__msg;

void fedc__frame_header_encode(uint8_t out[FEDC_FRAME_HEADER_BYTES], uint8_t type, uint32_t len);

/* Decodes and checks a frame header: an unknown type or a length above
 * max_frame fails with FEDC_ERR_PROTOCOL or FEDC_ERR_TOO_LARGE and a message. */
int fedc__frame_header_decode(const uint8_t in[FEDC_FRAME_HEADER_BYTES], uint32_t max_frame, uint8_t *type,
                              uint32_t *len, char *err, size_t errlen);

/* Encodes `m` as a complete MESSAGE frame into a new buffer (*out, *outlen),
 * which the caller frees with free(). */
int fedc__frame_pack_message(const fedc__msg *m, uint8_t **out, size_t *outlen, char *err, size_t errlen);

/* Decodes a MESSAGE payload. The caller frees the result with
 * fedc__msg_free(). Malformed bytes or an empty oneof give FEDC_ERR_PROTOCOL. */
int fedc__msg_unpack(const uint8_t *buf, size_t len, fedc__msg **out, char *err, size_t errlen);
void fedc__msg_free(fedc__msg *m);

/* A short name for a message's body ("fit_res"), for error messages. */
const char *fedc__msg_name(const fedc__msg *m);

/* Maps between protobuf DType values and fedc_dtype (the same numbers,
 * checked). Returns 0 for a value fedc does not know. */
int fedc__dtype_valid(int wire_dtype);

/* Fills a TensorHeader (pointing into t; nothing to free but the shape array
 * provided by the caller: `shape_buf` of FEDC_MAX_DIMS uint64). */
struct fedc_tensor;
void fedc__tensor_header_init(Fedc__V1__TensorHeader *h, const struct fedc_tensor *t, uint64_t *shape_buf);

/* Checks a received TensorHeader against the layout constraints of the
 * protocol (known dtype, at most FEDC_MAX_DIMS dims, nbytes equals
 * numel * size, name non-empty and short). */
int fedc__tensor_header_check(const Fedc__V1__TensorHeader *h, char *err, size_t errlen);

/* Non-zero when s is a valid node id (docs/protocol.md): 1 to 128
 * characters of [A-Za-z0-9._:-]. */
int fedc__node_id_valid(const char *s);

#endif
