/*
 * libFuzzer target: the message parsers of secure aggregation
 * (src/secagg/protocol_*.c). Each input plays one round of secagg_sim.h
 * (n = 4, complete graph, t = 3): its first byte (modulo SIM_POINTS) picks
 * where the rest goes, fedc__sa_server_recv in one of the four stages or
 * client 0's share_keys (as KEYS), masked_input (as SHARES_FWD) or unmask
 * (as UNMASK_REQ). Nothing may crash, a refusal carries a message, and
 * since "a refused message changes nothing", a round whose fuzz message was
 * refused must still complete with the exact sum.
 */
#include <stdint.h>
#include <stdlib.h>

#include "secagg_sim.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sim_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    sim_io io = {.point = data[0] % SIM_POINTS, .inject = data + 1, .inject_len = size - 1};
    int ok = sim_round(&io);
    /* Give each point (and its outcome) blocks of its own here, so that
     * libFuzzer tells the seeds apart: a whole round covers the same
     * library code whichever message was swapped. */
    static volatile unsigned seen[SIM_POINTS][2];
    switch (io.point) {
    case SIM_SERVER_ADVERTISE: seen[0][io.accepted]++; break;
    case SIM_SERVER_SHARES: seen[1][io.accepted]++; break;
    case SIM_SERVER_MASKED: seen[2][io.accepted]++; break;
    case SIM_SERVER_UNMASK_RESP: seen[3][io.accepted]++; break;
    case SIM_CLIENT_KEYS: seen[4][io.accepted]++; break;
    case SIM_CLIENT_SHARES_FWD: seen[5][io.accepted]++; break;
    default: seen[6][io.accepted]++; break;
    }
    if (!io.accepted && !ok) abort(); /* a refused message must change nothing */
    return 0;
}
