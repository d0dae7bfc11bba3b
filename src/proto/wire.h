/* Messages, config maps and tensor streams over a blocking connection
 * (docs/protocol.md). The event-loop server has its own incremental reader
 * but shares the encoding helpers declared here. */
#ifndef FEDC_PROTO_WIRE_H
#define FEDC_PROTO_WIRE_H

#include "fedc/config.h"
#include "fedc/tensor.h"
#include "net/conn.h"
#include "proto/frame.h"

/* protobuf KeyValue arrays that point into a fedc_config (no string copies). */
typedef struct fedc__kvbuf {
    Fedc__V1__KeyValue *kv;
    Fedc__V1__Scalar *sc;
    Fedc__V1__KeyValue **ptrs;
    size_t n;
} fedc__kvbuf;

int fedc__kvbuf_init(fedc__kvbuf *b, const fedc_config *c);
void fedc__kvbuf_free(fedc__kvbuf *b);
/* Copies received entries into c (later keys win). */
int fedc__config_from_kv(fedc_config *c, Fedc__V1__KeyValue *const *kv, size_t n);

/* Encodes the parameter set as the frames that follow a FitIns, FitRes,
 * EvaluateIns or GetParametersRes: for each tensor a TensorHeader MESSAGE
 * frame then its data in DATA frames of at most FEDC_CHUNK_BYTES. The
 * result is an array of iovecs: the frame headers and messages live in one
 * allocation (*hdrmem, freed by the caller with free()), the data iovecs
 * point into the tensors themselves, so nothing large is copied. */
struct iovec;
int fedc__params_encode_iov(const fedc_params *p, struct iovec **iov, int *iovcnt, void **hdrmem, char *err,
                            size_t errlen);

int fedc__send_message(fedc__conn *c, const fedc__msg *m, char *err, size_t errlen);
/* Sends message m followed by the frames of p (p may be NULL). */
int fedc__send_message_params(fedc__conn *c, const fedc__msg *m, const fedc_params *p, char *err,
                              size_t errlen);

/* Receives one MESSAGE frame. A DATA frame here is a protocol error. */
int fedc__recv_message(fedc__conn *c, uint32_t max_frame, fedc__msg **out, char *err, size_t errlen);

/* Receives `count` tensors (header + data). When `reuse` already has exactly
 * the announced layout the data is read into it and *out = reuse; otherwise
 * a new set is built in *out (the caller destroys it). `max_total` bounds
 * the bytes accepted (FEDC_ERR_TOO_LARGE above it). */
int fedc__recv_params(fedc__conn *c, uint32_t max_frame, uint32_t count, uint64_t max_total,
                      fedc_params *reuse, fedc_params **out, char *err, size_t errlen);

#endif
