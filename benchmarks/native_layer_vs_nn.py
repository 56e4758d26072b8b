"""Scratch timing: one LSTM layer, lstmkit's native engine against torch.nn.LSTM with the same weights.

Inference (no_grad forward) and training (forward + backward) at the issue's shapes, dense, with projection
(proj_size = H/4) and with packed input (lengths uniform in [T/2, T]); interleaved runs, median time ratios.
    python benchmarks/native_layer_vs_nn.py [--shapes S,M,L,XL] [--kinds dense,proj,packed] [--repeats 7]
--cpu-time times process CPU time instead of wall time: with --threads 1 it stays meaningful on a busy machine;
--min reports the fastest run, a better estimate of the quiet-machine time when other jobs share the cores.
"""
import argparse
import statistics
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from lstmkit.engine.native import native_layer

SHAPES = {"S": (128, 8, 128), "M": (64, 32, 256), "L": (64, 64, 512), "XL": (32, 64, 1024)}  # T, B, I = H


def cases(kind: str, T: int, B: int, H: int, gen: torch.Generator):
    """(nn.LSTM call, native call) for a fresh layer; each returns something to backprop through."""
    proj = H // 4 if kind == "proj" else 0
    lstm = torch.nn.LSTM(H, H, proj_size=proj)
    x = torch.randn(T, B, H, generator=gen)
    if kind == "packed":
        lengths = torch.randint(T // 2, T + 1, (B,), generator=gen).sort(descending=True).values
        lengths[0] = T
        packed = pack_padded_sequence(x, lengths)
        x_nn, rows, batch_sizes = packed, packed.data, packed.batch_sizes.tolist()
    else:
        x_nn, rows, batch_sizes = x, x.reshape(T * B, H), [B] * T
    P = proj or H
    h0, c0 = torch.zeros(B, P), torch.zeros(B, H)
    w = dict(lstm.named_parameters())
    bias = (w["bias_ih_l0"] + w["bias_hh_l0"]).detach().requires_grad_()

    def run_nn():
        out = lstm(x_nn)[0]
        return out.data if kind == "packed" else out

    def run_native():
        return native_layer(rows, batch_sizes, h0, c0, w["weight_ih_l0"], w["weight_hh_l0"], bias,
                            None, w.get("weight_hr_l0"))[0]

    return {"nn": run_nn, "native": run_native}, [*lstm.parameters(), bias]


CLOCK = time.perf_counter
STAT = statistics.median


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    samples = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t = CLOCK()
            fns[k]()
            samples[k].append(CLOCK() - t)
    return {k: STAT(v) for k, v in samples.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="S,M,L,XL")
    ap.add_argument("--kinds", default="dense,proj,packed")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cpu-time", action="store_true")
    ap.add_argument("--min", action="store_true", help="report the fastest run instead of the median")
    args = ap.parse_args()
    global CLOCK, STAT
    if args.min:
        STAT = min
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK = time.process_time
    gen = torch.Generator().manual_seed(0)
    stat = "fastest" if args.min else "median"
    print(f"threads={torch.get_num_threads()}  ratio = native / nn.LSTM time ({stat} of {args.repeats})")
    for name in args.shapes.split(","):
        T, B, H = SHAPES[name]
        for kind in args.kinds.split(","):
            fns, params = cases(kind, T, B, H, gen)
            with torch.no_grad():
                inf = interleaved(fns, args.repeats)

            def train(f):
                def step():
                    f().sum().backward()
                    for p in params:
                        p.grad = None
                return step

            tr = interleaved({k: train(f) for k, f in fns.items()}, args.repeats)
            print(f"{name:2s} {kind:6s}  inference {inf['native'] * 1e3:8.2f} ms vs {inf['nn'] * 1e3:8.2f} ms  "
                  f"ratio {inf['native'] / inf['nn']:.2f}   training {tr['native'] * 1e3:8.2f} ms vs "
                  f"{tr['nn'] * 1e3:8.2f} ms  ratio {tr['native'] / tr['nn']:.2f}", flush=True)


if __name__ == "__main__":
    main()
