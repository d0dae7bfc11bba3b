#!/usr/bin/env python3
"""A federated-learning client for the fedc wire protocol, version 1.

Written from docs/protocol.md and src/proto/fedc.proto only, as a check that
the specification is enough to interoperate with a fedc server. It trains a
chain of dense layers (the tensors received, read in order as (weight, bias)
pairs, ReLU between layers, softmax cross-entropy at the end) with minibatch
SGD in numpy on local IDX data.

usage: fedc_client.py --server HOST:PORT --node-id ID [--data DIR]
                      (--ca FILE [--cert FILE --key FILE] [--server-name NAME]
                       | --insecure) [--bad-shape] [--nan]

The connection is TLS 1.3 (Python's ssl module): --ca is the CA the server's
certificate must be signed by, and that certificate must name HOST (or
--server-name); --cert and --key are this client's certificate and key, for a
server that requires them. --insecure connects in plaintext.

The message classes come from fedc_pb2, generated from fedc.proto by
`protoc --python_out`. If fedc_pb2 is not importable, the client generates it
into a temporary directory (needs `protoc`; the .proto is found through
$FEDC_PROTO or relative to this file).
"""

import argparse
import atexit
import gzip
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

PROTOCOL_VERSION = 1
SOFTWARE = "fedc-python-client 1.0"

FRAME_MESSAGE = 1
FRAME_DATA = 2
HEADER = struct.Struct(">IB")

DEFAULT_MAX_FRAME = 16 * 1024 * 1024  # what 0 means in Hello/Welcome
MIN_MAX_FRAME = 1024 * 1024  # smallest limit a peer may announce
DATA_CHUNK = 1024 * 1024  # most bytes in one DATA frame
MY_MAX_FRAME = DEFAULT_MAX_FRAME


def load_pb2():
    try:
        import fedc_pb2  # noqa: F401
        return fedc_pb2
    except ImportError:
        pass
    proto = os.environ.get("FEDC_PROTO")
    if not proto:
        here = os.path.dirname(os.path.abspath(__file__))
        proto = os.path.join(here, "..", "..", "src", "proto", "fedc.proto")
    proto = os.path.abspath(proto)
    out = tempfile.mkdtemp(prefix="fedc_pb2.")
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(["protoc", "-I", os.path.dirname(proto), "--python_out", out,
                    os.path.basename(proto)], check=True)
    sys.path.insert(0, out)
    import fedc_pb2  # noqa: F811
    return fedc_pb2


pb = load_pb2()

# dtype enum value -> (numpy dtype, element size); BF16 has no numpy type and
# is carried as raw 2-byte words.
DTYPES = {
    pb.F32: (np.dtype("<f4"), 4),
    pb.F64: (np.dtype("<f8"), 8),
    pb.I32: (np.dtype("<i4"), 4),
    pb.I64: (np.dtype("<i8"), 8),
    pb.U8: (np.dtype("u1"), 1),
    pb.I8: (np.dtype("i1"), 1),
    pb.F16: (np.dtype("<f2"), 2),
    pb.BF16: (np.dtype("<u2"), 2),
}


def log(msg):
    print(f"fedc_client[{NODE}]: {msg}", file=sys.stderr, flush=True)


NODE = "?"


class ProtocolError(Exception):
    """The peer broke the protocol: send Error and close."""


class ModelError(Exception):
    """The model or data cannot be used: answer with Failure."""


# ---------------------------------------------------------------- data

def read_idx(path):
    """Reads an IDX file (gzip when the name ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ModelError(f"{path}: too short for an IDX file")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic == 0x00000803:
        ndim = 3
    elif magic == 0x00000801:
        ndim = 1
    else:
        raise ModelError(f"{path}: bad IDX magic 0x{magic:08x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    count = int(np.prod(dims))
    if len(body) != count:
        raise ModelError(f"{path}: {len(body)} data bytes, expected {count}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def find_file(d, base):
    for name in (base + ".gz", base):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise ModelError(f"{d}: no {base}.gz")


def load_split(d, prefix):
    images = read_idx(find_file(d, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_file(d, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise ModelError(f"{d}: {prefix} has {images.shape[0]} images but "
                         f"{labels.shape[0]} labels")
    x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


class Data:
    def __init__(self, d):
        self.dir = d
        self.train = self.test = None
        self.error = None
        if d is None:
            self.error = "no --data directory"
            return
        try:
            self.train = load_split(d, "train")
            self.test = load_split(d, "t10k")
        except (OSError, ModelError) as e:
            self.error = str(e)


# ---------------------------------------------------------------- framing

class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.peer_max = DEFAULT_MAX_FRAME

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError("connection closed by the server")
            buf += chunk
        return bytes(buf)

    def read_frame(self):
        length, ftype = HEADER.unpack(self.recv_exact(HEADER.size))
        if ftype not in (FRAME_MESSAGE, FRAME_DATA):
            raise ProtocolError(f"frame of unknown type {ftype}")
        if length > MY_MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes exceeds our limit {MY_MAX_FRAME}")
        if length == 0:
            raise ProtocolError("empty MESSAGE frame" if ftype == FRAME_MESSAGE
                                else "empty DATA frame")
        return ftype, self.recv_exact(length)

    def read_message(self):
        ftype, payload = self.read_frame()
        if ftype != FRAME_MESSAGE:
            raise ProtocolError("DATA frame where a message was expected")
        msg = pb.Message()
        try:
            msg.ParseFromString(payload)
        except Exception as e:  # DecodeError
            raise ProtocolError(f"undecodable message: {e}")
        if msg.WhichOneof("body") is None:
            raise ProtocolError("message with no body")
        return msg

    def send_frame(self, ftype, payload):
        if len(payload) > self.peer_max:
            raise ProtocolError(f"internal: frame of {len(payload)} bytes exceeds "
                                f"the server's limit {self.peer_max}")
        self.sock.sendall(HEADER.pack(len(payload), ftype) + payload)

    def send_message(self, msg):
        self.send_frame(FRAME_MESSAGE, msg.SerializeToString())

    # --- tensor sets

    def read_tensors(self, n):
        """Reads n tensors; returns a list of (name, dtype, shape, ndarray)."""
        out = []
        names = set()
        for _ in range(n):
            msg = self.read_message()
            if msg.WhichOneof("body") != "tensor":
                raise ProtocolError(f"expected a tensor header, got {msg.WhichOneof('body')}")
            h = msg.tensor
            if h.dtype not in DTYPES:
                raise ProtocolError(f"tensor {h.name!r}: unknown dtype {h.dtype}")
            nbytes_name = len(h.name.encode("utf-8"))
            if not 1 <= nbytes_name <= 255 or h.name in names:
                raise ProtocolError(f"tensor name {h.name!r} empty, too long or repeated")
            names.add(h.name)
            np_dtype, size = DTYPES[h.dtype]
            shape = tuple(int(s) for s in h.shape)
            expect = int(np.prod(shape, dtype=np.uint64)) * size if shape else size
            if h.nbytes != expect:
                raise ProtocolError(f"tensor {h.name!r}: nbytes {h.nbytes}, but shape "
                                    f"{list(shape)} needs {expect}")
            buf = bytearray()
            while len(buf) < h.nbytes:
                ftype, payload = self.read_frame()
                if ftype != FRAME_DATA:
                    raise ProtocolError(f"tensor {h.name!r}: message before its data was complete")
                if len(buf) + len(payload) > h.nbytes:
                    raise ProtocolError(f"tensor {h.name!r}: more data than its {h.nbytes} bytes")
                buf += payload
            arr = np.frombuffer(bytes(buf), dtype=np_dtype).reshape(shape).copy()
            out.append((h.name, h.dtype, shape, arr))
        return out

    def send_tensors(self, tensors):
        chunk = min(DATA_CHUNK, self.peer_max)
        for name, dtype, shape, arr in tensors:
            np_dtype, _ = DTYPES[dtype]
            data = np.ascontiguousarray(arr, dtype=np_dtype).tobytes()
            msg = pb.Message()
            msg.tensor.name = name
            msg.tensor.dtype = dtype
            msg.tensor.shape.extend(int(s) for s in shape)
            msg.tensor.nbytes = len(data)
            self.send_message(msg)
            for off in range(0, len(data), chunk):
                self.send_frame(FRAME_DATA, data[off:off + chunk])


# ---------------------------------------------------------------- config

def kv_to_dict(kvs):
    d = {}
    for kv in kvs:  # the last value of a repeated key wins
        kind = kv.value.WhichOneof("kind")
        d[kv.key] = getattr(kv.value, kind) if kind else None
    return d


def set_metric(kvs, key, value):
    kv = kvs.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.b = value
    elif isinstance(value, int):
        kv.value.i = value
    elif isinstance(value, str):
        kv.value.s = value
    else:
        kv.value.f = float(value)


def cfg_num(cfg, key, default, kind):
    v = cfg.get(key, default)
    if v is None or isinstance(v, (str, bool)):
        raise ModelError(f"config {key!r} = {v!r} is not a number")
    return kind(v)


# ---------------------------------------------------------------- model

class DenseChain:
    """The received tensors read as dense layers: a 2-D weight [out, in],
    optionally followed by a 1-D bias [out]; ReLU between layers."""

    def __init__(self, tensors, in_dim, n_classes):
        self.tensors = tensors
        self.layers = []  # (weight index, bias index or None)
        i = 0
        while i < len(tensors):
            name, dtype, shape, _ = tensors[i]
            if dtype != pb.F32 or len(shape) != 2:
                raise ModelError(f"tensor {name!r} (dtype {dtype}, shape {list(shape)}) "
                                 "is not a 2-D F32 dense weight; this client trains "
                                 "only chains of dense layers")
            b = None
            if i + 1 < len(tensors):
                _, bdt, bshape, _ = tensors[i + 1]
                if bdt == pb.F32 and bshape == (shape[0],):
                    b = i + 1
            self.layers.append((i, b))
            i += 2 if b is not None else 1
        if not self.layers:
            raise ModelError("empty model")
        prev = in_dim
        for wi, _ in self.layers:
            name, _, (out, inn), _ = tensors[wi]
            if inn != prev:
                raise ModelError(f"tensor {name!r} takes {inn} inputs, but its input "
                                 f"has {prev} features")
            prev = out
        if prev < n_classes:
            raise ModelError(f"the model has {prev} outputs, the data {n_classes} classes")
        self.params = [t[3].astype(np.float32) for t in tensors]

    def wb(self, k):
        wi, bi = self.layers[k]
        return self.params[wi], (self.params[bi] if bi is not None else None)

    def forward(self, x):
        acts = [x]
        h = x
        last = len(self.layers) - 1
        for k in range(len(self.layers)):
            w, b = self.wb(k)
            z = h @ w.T
            if b is not None:
                z += b
            h = np.maximum(z, 0) if k < last else z
            if k < last:
                acts.append(h)
        return h, acts

    @staticmethod
    def softmax_xent(logits, y):
        z = logits - logits.max(axis=1, keepdims=True)
        ez = np.exp(z)
        s = ez.sum(axis=1, keepdims=True)
        logp = z - np.log(s)
        loss = -logp[np.arange(len(y)), y]
        return loss, ez / s

    def grads(self, x, y):
        logits, acts = self.forward(x)
        loss, p = self.softmax_xent(logits, y)
        g = p
        g[np.arange(len(y)), y] -= 1.0
        g /= np.float32(len(y))
        grads = [None] * len(self.params)
        for k in reversed(range(len(self.layers))):
            wi, bi = self.layers[k]
            w, _ = self.wb(k)
            grads[wi] = g.T @ acts[k]
            if bi is not None:
                grads[bi] = g.sum(axis=0)
            if k > 0:
                g = (g @ w) * (acts[k] > 0)
        return float(loss.mean()), grads

    def fit(self, x, y, lr, momentum, weight_decay, epochs, batch, seed):
        rng = np.random.default_rng(seed % (1 << 64))
        vel = [np.zeros_like(p) for p in self.params]
        n = len(y)
        loss_sum = 0.0
        for _ in range(epochs):
            perm = rng.permutation(n)
            loss_sum = 0.0
            for start in range(0, n, batch):
                idx = perm[start:start + batch]
                loss, grads = self.grads(x[idx], y[idx])
                loss_sum += loss * len(idx)
                for p, g, v in zip(self.params, grads, vel):
                    if weight_decay:
                        g = g + np.float32(weight_decay) * p
                    if momentum:
                        v *= np.float32(momentum)
                        v += g
                        g = v
                    p -= np.float32(lr) * g
        return loss_sum / n  # mean loss over the last epoch

    def evaluate(self, x, y, batch=1024):
        loss_sum, correct = 0.0, 0
        for s in range(0, len(y), batch):
            logits, _ = self.forward(x[s:s + batch])
            loss, _ = self.softmax_xent(logits, y[s:s + batch])
            loss_sum += float(loss.sum())
            correct += int((logits.argmax(axis=1) == y[s:s + batch]).sum())
        return loss_sum / len(y), correct / len(y)

    def updated(self):
        return [(n, dt, shape, p) for (n, dt, shape, _), p in zip(self.tensors, self.params)]


def initial_model(in_dim, n_classes, seed):
    """This client's own model, offered when the server has none."""
    rng = np.random.default_rng(seed % (1 << 64))
    sizes = [in_dim, 200, 200, n_classes]
    tensors = []
    for k in range(len(sizes) - 1):
        bound = 1.0 / np.sqrt(sizes[k])
        w = rng.uniform(-bound, bound, (sizes[k + 1], sizes[k])).astype(np.float32)
        b = rng.uniform(-bound, bound, (sizes[k + 1],)).astype(np.float32)
        tensors.append((f"fc{k + 1}.weight", pb.F32, w.shape, w))
        tensors.append((f"fc{k + 1}.bias", pb.F32, b.shape, b))
    return tensors


# ---------------------------------------------------------------- client

class Client:
    def __init__(self, args, conn, data):
        self.args = args
        self.conn = conn
        self.data = data

    def dims(self):
        if self.data.error:
            raise ModelError(self.data.error)
        x, y = self.data.train
        xt, yt = self.data.test
        n_classes = int(max(y.max(initial=0), yt.max(initial=0))) + 1
        return x.shape[1], n_classes

    def send_failure(self, rnd, reason):
        log(f"round {rnd}: failure: {reason}")
        msg = pb.Message()
        msg.failure.round = rnd
        msg.failure.reason = reason
        self.conn.send_message(msg)

    def on_fit(self, ins):
        cfg = kv_to_dict(ins.config)
        tensors = self.conn.read_tensors(ins.num_tensors)
        try:
            in_dim, n_classes = self.dims()
            model = DenseChain(tensors, in_dim, n_classes)
            lr = cfg_num(cfg, "lr", 0.05, float)
            momentum = cfg_num(cfg, "momentum", 0.0, float)
            wd = cfg_num(cfg, "weight_decay", 0.0, float)
            epochs = cfg_num(cfg, "local_epochs", 1, int)
            batch = cfg_num(cfg, "batch_size", 32, int)
            seed = cfg_num(cfg, "seed", 0, int)
            if epochs < 1 or batch < 1:
                raise ModelError(f"local_epochs {epochs} / batch_size {batch} must be >= 1")
            x, y = self.data.train
            if len(y) == 0:
                raise ModelError("no local training examples")
            t0 = time.time()
            train_loss = model.fit(x, y, lr, momentum, wd, epochs, batch, seed)
        except ModelError as e:
            self.send_failure(ins.round, str(e))
            return
        out = model.updated()
        if self.args.bad_shape:
            name, dt, shape, arr = out[0]
            bad = (shape[0] + 1,) + tuple(shape[1:])
            out[0] = (name, dt, bad, np.zeros(bad, dtype=np.float32))
            log(f"round {ins.round}: sending {name!r} with the wrong shape {list(bad)}")
        if self.args.nan:
            name, dt, shape, arr = out[0]
            arr = arr.copy()
            arr.flat[0] = np.nan
            arr.flat[arr.size // 2] = np.nan
            out[0] = (name, dt, shape, arr)
            log(f"round {ins.round}: sending NaN values in {name!r}")
        log(f"round {ins.round}: trained on {len(y)} examples in "
            f"{time.time() - t0:.2f}s, train_loss {train_loss:.4f}")
        msg = pb.Message()
        msg.fit_res.round = ins.round
        msg.fit_res.num_examples = len(y)
        set_metric(msg.fit_res.metrics, "train_loss", train_loss)
        msg.fit_res.num_tensors = len(out)
        self.conn.send_message(msg)
        self.conn.send_tensors(out)

    def on_evaluate(self, ins):
        tensors = self.conn.read_tensors(ins.num_tensors)
        try:
            in_dim, n_classes = self.dims()
            model = DenseChain(tensors, in_dim, n_classes)
            xt, yt = self.data.test
            if len(yt) == 0:
                raise ModelError("no local test examples")
            loss, acc = model.evaluate(xt, yt)
        except ModelError as e:
            self.send_failure(ins.round, str(e))
            return
        log(f"round {ins.round}: evaluated {len(yt)} examples: loss {loss:.4f}, "
            f"accuracy {acc:.4f}")
        msg = pb.Message()
        msg.evaluate_res.round = ins.round
        msg.evaluate_res.loss = loss
        msg.evaluate_res.num_examples = len(yt)
        set_metric(msg.evaluate_res.metrics, "accuracy", acc)
        self.conn.send_message(msg)

    def on_get_parameters(self, ins):
        cfg = kv_to_dict(ins.config)
        try:
            in_dim, n_classes = self.dims()
            seed = cfg_num(cfg, "seed", 0, int)
        except ModelError as e:
            self.send_failure(0, str(e))
            return
        tensors = initial_model(in_dim, n_classes, seed)
        log(f"sending initial parameters ({len(tensors)} tensors)")
        msg = pb.Message()
        msg.get_parameters_res.num_tensors = len(tensors)
        self.conn.send_message(msg)
        self.conn.send_tensors(tensors)

    def serve(self):
        while True:
            msg = self.conn.read_message()
            body = msg.WhichOneof("body")
            if body == "fit_ins":
                self.on_fit(msg.fit_ins)
            elif body == "evaluate_ins":
                self.on_evaluate(msg.evaluate_ins)
            elif body == "get_parameters_ins":
                self.on_get_parameters(msg.get_parameters_ins)
            elif body == "shutdown":
                log(f"shutdown: {msg.shutdown.reason}")
                return 0
            elif body == "error":
                log(f"error from the server: {msg.error.reason}")
                return 1
            else:
                raise ProtocolError(f"unexpected {body} message")


def tls_context(ca, cert=None, key=None):
    """A TLS 1.3 client context that trusts only the CA in the file `ca` and,
    with cert and key, presents that certificate (mutual TLS)."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def connect(host, port, timeout, tls=None, server_name=None):
    """A connection to host:port, retrying refused connections for `timeout`
    seconds; with `tls` (an ssl.SSLContext), after the TLS handshake, which
    checks that the server's certificate names server_name (default host).
    A failed handshake is not retried."""
    deadline = time.time() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=10)
            break
        except OSError as e:
            if time.time() >= deadline:
                raise
            log(f"connect to {host}:{port}: {e}; retrying")
            time.sleep(0.5)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=server_name or host)
    except OSError:
        sock.close()
        raise


def main():
    global NODE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="HOST:PORT")
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--data", help="directory with the IDX train and t10k files")
    ap.add_argument("--bad-shape", action="store_true",
                    help="send updates whose first tensor has a wrong shape")
    ap.add_argument("--nan", action="store_true", help="send updates with NaN values")
    ap.add_argument("--connect-timeout", type=float, default=60.0,
                    help="keep retrying an unreachable server for S seconds")
    ap.add_argument("--ca", help="TLS: the CA that signed the server's certificate (PEM)")
    ap.add_argument("--cert", help="TLS: this client's certificate (PEM), with --key")
    ap.add_argument("--key", help="TLS: this client's private key (PEM), with --cert")
    ap.add_argument("--server-name", help="the name the server's certificate must carry "
                                          "(default: HOST)")
    ap.add_argument("--insecure", action="store_true",
                    help="connect without TLS (plaintext)")
    args = ap.parse_args()
    if args.insecure and (args.ca or args.cert or args.key or args.server_name):
        ap.error("--insecure and the TLS flags (--ca, --cert, --key, --server-name) exclude each other")
    if not args.insecure and not args.ca:
        ap.error("--ca FILE is required to check the server's certificate, or --insecure for plaintext")
    if bool(args.cert) != bool(args.key):
        ap.error("--cert needs --key" if args.cert else "--key needs --cert")
    NODE = args.node_id
    host, sep, port = args.server.rpartition(":")
    if not sep or not host or not port.isdigit():
        ap.error("--server must be HOST:PORT")
    host = host.strip("[]")

    data = Data(args.data)
    if data.error:
        log(f"warning: {data.error}; requests will be answered with Failure")
    else:
        log(f"data: {len(data.train[1])} train, {len(data.test[1])} test examples")

    tls = None
    if args.insecure:
        log("warning: --insecure: the connection is plaintext, unauthenticated and unencrypted")
    else:
        try:
            tls = tls_context(args.ca, args.cert, args.key)
        except (OSError, ssl.SSLError) as e:
            log(f"TLS files: {e}")
            return 1
    try:
        sock = connect(host, int(port), args.connect_timeout, tls, args.server_name)
    except OSError as e:
        log(f"cannot connect to {args.server}: {e}")
        return 1
    if tls is not None:
        log(f"TLS: {sock.version()}, {sock.cipher()[0]}")
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(sock)
    try:
        hello = pb.Message()
        hello.hello.protocol_version = PROTOCOL_VERSION
        hello.hello.node_id = args.node_id
        hello.hello.software = SOFTWARE
        hello.hello.max_frame_bytes = MY_MAX_FRAME
        conn.send_message(hello)
        msg = conn.read_message()
        body = msg.WhichOneof("body")
        if body == "error":
            log(f"refused by the server: {msg.error.reason}")
            return 1
        if body != "welcome":
            raise ProtocolError(f"expected welcome, got {body}")
        w = msg.welcome
        if w.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"server speaks protocol version {w.protocol_version}, "
                                f"this client {PROTOCOL_VERSION}")
        peer_max = w.max_frame_bytes or DEFAULT_MAX_FRAME
        if peer_max < MIN_MAX_FRAME:
            raise ProtocolError(f"server's max_frame_bytes {peer_max} is below 1 MiB")
        conn.peer_max = peer_max
        log(f"connected to {w.server_id!r} (max_frame_bytes {peer_max})")
        return Client(args, conn, data).serve()
    except ProtocolError as e:
        log(f"protocol error: {e}")
        try:
            err = pb.Message()
            err.error.reason = str(e)
            conn.send_message(err)
        except OSError:
            pass
        return 2
    except (EOFError, OSError) as e:
        log(f"connection lost: {e}")
        return 1
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
