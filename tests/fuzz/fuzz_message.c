/*
 * libFuzzer target: fedc__msg_unpack (src/proto/frame.c, the protobuf-c
 * decoder of fedc.v1.Message) on the whole input, then what the receivers
 * do with the fields (fedc__config_from_kv on config and metrics maps,
 * fedc__tensor_header_check, fedc__node_id_valid). A message that decodes
 * must re-encode (fedc__frame_pack_message) and decode again to the same
 * body; a refusal must be FEDC_ERR_PROTOCOL with a message and no output.
 * The libFuzzer version of tests/unit/test_proto_fuzz.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config.h"
#include "fedc/core.h"
#include "proto/frame.h"
#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Non-zero when m or a message inside it kept an unknown field numbered 0.
 * protobuf-c (1.4) accepts field number 0 when its tag is spelt as a
 * multi-byte varint (0x82 0x00), keeps it as an unknown field and writes it
 * back as the one-byte tag 0x02, which its decoder then refuses: such a
 * message does not survive a round trip, through no fault of fedc (which
 * never re-encodes what it received). */
static int has_field_zero(const ProtobufCMessage *m)
{
    if (!m) return 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *base = (const char *)m;
        if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + fd->quantifier_offset) != fd->id) continue;
        }
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + fd->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + fd->offset);
            for (size_t k = 0; k < n; k++)
                if (has_field_zero(arr[k])) return 1;
        } else if (has_field_zero(*(ProtobufCMessage *const *)(base + fd->offset))) {
            return 1;
        }
    }
    return 0;
}

static void use_kv(Fedc__V1__KeyValue *const *kv, size_t n)
{
    fedc_config *c = fedc_config_create();
    if (!c) abort();
    if (fedc__config_from_kv(c, kv, n) == FEDC_OK) {
        /* What was taken in must encode again. */
        fedc__kvbuf b;
        if (fedc__kvbuf_init(&b, c) == FEDC_OK) fedc__kvbuf_free(&b);
    }
    fedc_config_destroy(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__msg *m = NULL;
    err[0] = '\0';
    int rc = fedc__msg_unpack(data, size, &m, err, sizeof err);
    if (rc != FEDC_OK) {
        if (rc != FEDC_ERR_PROTOCOL || m != NULL || err[0] == '\0') abort();
        return 0;
    }
    if (!m || m->body_case == FEDC__V1__MESSAGE__BODY__NOT_SET) abort();
    (void)fedc__msg_name(m);
    switch (m->body_case) {
    case FEDC__V1__MESSAGE__BODY_HELLO:
        if (m->hello->node_id) (void)fedc__node_id_valid(m->hello->node_id);
        break;
    case FEDC__V1__MESSAGE__BODY_TENSOR: (void)fedc__tensor_header_check(m->tensor, err, sizeof err); break;
    case FEDC__V1__MESSAGE__BODY_FIT_INS: use_kv(m->fit_ins->config, m->fit_ins->n_config); break;
    case FEDC__V1__MESSAGE__BODY_FIT_RES: use_kv(m->fit_res->metrics, m->fit_res->n_metrics); break;
    case FEDC__V1__MESSAGE__BODY_EVALUATE_INS:
        use_kv(m->evaluate_ins->config, m->evaluate_ins->n_config);
        break;
    case FEDC__V1__MESSAGE__BODY_EVALUATE_RES:
        use_kv(m->evaluate_res->metrics, m->evaluate_res->n_metrics);
        break;
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS:
        use_kv(m->get_parameters_ins->config, m->get_parameters_ins->n_config);
        break;
    default: break;
    }
    /* What decoded must encode and decode again to the same body. */
    uint8_t *frame = NULL;
    size_t flen = 0;
    if (fedc__frame_pack_message(m, &frame, &flen, err, sizeof err) != FEDC_OK) abort();
    fedc__msg *again = NULL;
    if (fedc__msg_unpack(frame + FEDC_FRAME_HEADER_BYTES, flen - FEDC_FRAME_HEADER_BYTES, &again, err,
                         sizeof err) != FEDC_OK) {
        if (!has_field_zero(&m->base)) abort();
        free(frame);
        fedc__msg_free(m);
        return 0;
    }
    if (again->body_case != m->body_case) abort();
    /* And the second encoding is the same bytes as the first. */
    uint8_t *frame2 = NULL;
    size_t flen2 = 0;
    if (fedc__frame_pack_message(again, &frame2, &flen2, err, sizeof err) != FEDC_OK || flen2 != flen ||
        memcmp(frame, frame2, flen) != 0)
        abort();
    free(frame2);
    fedc__msg_free(again);
    free(frame);
    fedc__msg_free(m);
    return 0;
}
