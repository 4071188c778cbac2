"""Train a small float CNN on scikit-learn's bundled 8x8 digits and save it as a .tflite.

Offline and deterministic: the data ships inside the scikit-learn wheel, training is plain
numpy (manual backprop, Adam). Writes MODEL.tflite plus, beside it, MODEL_calib.npz (in0:
[N, 1, 8, 8, 1] training images for calibration) and MODEL_eval.npz (in0 and labels of the
held-out test split).

    python examples/digits_cnn.py -o out/digits.tflite
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mcuq.ir import Graph, Node, Op, Tensor
from mcuq.writer import write_model

CONV1, CONV2, CLASSES = 8, 16, 10


def load_digits_split(seed: int = 0):
    """Images scaled to [0, 1] as NHWC, labels; 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def im2col(x: np.ndarray, k: int, stride: int) -> tuple[np.ndarray, int]:
    """SAME-padded 3x3 patches: [N, OH, OW, k*k*C] (TFLite pads the odd pixel bottom/right)."""
    n, h, w, c = x.shape
    out = -(-h // stride)
    total = max(0, (out - 1) * stride + k - h)
    lo = total // 2
    xp = np.pad(x, ((0, 0), (lo, total - lo), (lo, total - lo), (0, 0)))
    cols = np.stack([xp[:, i:i + stride * out:stride, j:j + stride * out:stride, :]
                     for i in range(k) for j in range(k)], axis=3)
    return cols.reshape(n, out, out, k * k * c), lo


def col2im(dcols: np.ndarray, shape, k: int, stride: int, lo: int) -> np.ndarray:
    n, h, w, c = shape
    out = dcols.shape[1]
    total = max(0, (out - 1) * stride + k - h)
    dxp = np.zeros((n, h + total, w + total, c), np.float32)
    d = dcols.reshape(n, out, out, k * k, c)
    for idx in range(k * k):
        i, j = divmod(idx, k)
        dxp[:, i:i + stride * out:stride, j:j + stride * out:stride, :] += d[:, :, :, idx]
    return dxp[:, lo:lo + h, lo:lo + w, :]


class Net:
    """conv3x3(8)+ReLU -> conv3x3/2(16)+ReLU -> flatten -> FC(10) (softmax in the loss)."""

    def __init__(self, rng: np.random.Generator):
        he = lambda fan_in, shape: (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.p = {
            "w1": he(9, (9 * 1, CONV1)), "b1": np.zeros(CONV1, np.float32),
            "w2": he(9 * CONV1, (9 * CONV1, CONV2)), "b2": np.zeros(CONV2, np.float32),
            "w3": he(4 * 4 * CONV2, (4 * 4 * CONV2, CLASSES)), "b3": np.zeros(CLASSES, np.float32),
        }

    def forward(self, x):
        c1, lo1 = im2col(x, 3, 1)
        a1 = np.maximum(c1 @ self.p["w1"] + self.p["b1"], 0)
        c2, lo2 = im2col(a1, 3, 2)
        a2 = np.maximum(c2 @ self.p["w2"] + self.p["b2"], 0)
        flat = a2.reshape(len(x), -1)
        logits = flat @ self.p["w3"] + self.p["b3"]
        return logits, (x, c1, lo1, a1, c2, lo2, a2, flat)

    def grads(self, x, y):
        logits, (x, c1, lo1, a1, c2, lo2, a2, flat) = self.forward(x)
        z = logits - logits.max(1, keepdims=True)
        prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        d = prob
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        g = {"w3": flat.T @ d, "b3": d.sum(0)}
        da2 = (d @ self.p["w3"].T).reshape(a2.shape) * (a2 > 0)
        g["w2"] = c2.reshape(-1, c2.shape[-1]).T @ da2.reshape(-1, CONV2)
        g["b2"] = da2.sum((0, 1, 2))
        da1 = col2im(da2 @ self.p["w2"].T, a1.shape, 3, 2, lo2) * (a1 > 0)
        g["w1"] = c1.reshape(-1, c1.shape[-1]).T @ da1.reshape(-1, CONV1)
        g["b1"] = da1.sum((0, 1, 2))
        return g

    def train(self, x, y, epochs: int, rng: np.random.Generator, lr: float = 3e-3):
        m = {k: np.zeros_like(v) for k, v in self.p.items()}
        v = {k: np.zeros_like(v) for k, v in self.p.items()}
        step = 0
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x), 32):
                idx = order[i:i + 32]
                g = self.grads(x[idx], y[idx])
                step += 1
                for k in self.p:
                    m[k] = 0.9 * m[k] + 0.1 * g[k]
                    v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
                    mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                    self.p[k] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)

    def accuracy(self, x, y) -> float:
        return float((self.forward(x)[0].argmax(1) == y).mean())

    def to_graph(self) -> Graph:
        """The trained net as an ir.Graph in TFLite layout (OHWI filters, [out, in] FC)."""
        p = self.p
        conv = lambda w, cin, cout: np.ascontiguousarray(w.reshape(3, 3, cin, cout).transpose(3, 0, 1, 2))
        t = [
            Tensor(0, "input", (1, 8, 8, 1), "float32"),
            Tensor(1, "conv1/filter", (CONV1, 3, 3, 1), "float32", data=conv(p["w1"], 1, CONV1)),
            Tensor(2, "conv1/bias", (CONV1,), "float32", data=p["b1"].copy()),
            Tensor(3, "conv1", (1, 8, 8, CONV1), "float32"),
            Tensor(4, "conv2/filter", (CONV2, 3, 3, CONV1), "float32", data=conv(p["w2"], CONV1, CONV2)),
            Tensor(5, "conv2/bias", (CONV2,), "float32", data=p["b2"].copy()),
            Tensor(6, "conv2", (1, 4, 4, CONV2), "float32"),
            Tensor(7, "flatten/shape", (2,), "int32", data=np.array([1, 4 * 4 * CONV2], np.int32)),
            Tensor(8, "flatten", (1, 4 * 4 * CONV2), "float32"),
            Tensor(9, "dense/weights", (CLASSES, 4 * 4 * CONV2), "float32", data=np.ascontiguousarray(p["w3"].T)),
            Tensor(10, "dense/bias", (CLASSES,), "float32", data=p["b3"].copy()),
            Tensor(11, "logits", (1, CLASSES), "float32"),
            Tensor(12, "probabilities", (1, CLASSES), "float32"),
        ]
        conv_attrs = lambda s: {"padding": "SAME", "stride_h": s, "stride_w": s, "dilation_h": 1,
                                "dilation_w": 1, "activation": "RELU"}
        nodes = [
            Node(0, Op.CONV_2D, (0, 1, 2), (3,), conv_attrs(1)),
            Node(1, Op.CONV_2D, (3, 4, 5), (6,), conv_attrs(2)),
            Node(2, Op.RESHAPE, (6, 7), (8,), {"new_shape": (1, 4 * 4 * CONV2)}),
            Node(3, Op.FULLY_CONNECTED, (8, 9, 10), (11,),
                 {"activation": "NONE", "keep_num_dims": False, "weights_format": "DEFAULT"}),
            Node(4, Op.SOFTMAX, (11,), (12,), {"beta": 1.0}),
        ]
        for tensor in t:
            if tensor.data is not None:
                tensor.data.setflags(write=False)
        return Graph(tuple(t), tuple(nodes), (0,), (12,), "digits_cnn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True, help="output .tflite path")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    net = Net(rng)
    net.train(xtr, ytr, args.epochs, rng)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(write_model(net.to_graph()))
    stem = out.with_suffix("")
    np.savez(f"{stem}_calib.npz", in0=xtr[:256, None])
    np.savez(f"{stem}_eval.npz", in0=xte[:, None], labels=yte)
    print(f"wrote {out}: float test accuracy {100 * net.accuracy(xte, yte):.2f}% "
          f"({len(xte)} held-out digits); calibration and eval sets beside it")


if __name__ == "__main__":
    main()
