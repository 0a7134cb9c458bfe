"""Where file → trained model goes: read, encoder fit, encode, training, scoring (run.py's deepfm row).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/profile_file.py benchmarks/.data/longtail [--setting defaults]
        [--numeric no] [--cprofile benchmarks/profiles/file_longtail.txt] [--skip-training] [--interleave 3]
        [--fingerprint] [--split]

Phases, each timed alone in this process (wall and the process's CPU time), in the order ``deepfm
train`` runs them for an in-memory file: read (every chunk parsed, nothing else: the CSV parsing
inside each pass below), fit (``fit_streaming``: parse + count + vocabularies), encode
(``encode_file``: parse + look up), both in one reading pass (``fit_and_encode``, which training
runs for a file it holds in memory), training (``Estimator.fit`` minus that pass, which it repeats),
scoring (the test file encoded and predicted). ``--cprofile`` writes the top functions of fit,
encode and the one pass by cumulative time. ``--interleave N`` instead times, N rounds in turn, the
read with 16 MB and with 1 MB parse blocks, fit then encode, and the one pass, and prints medians:
ratios in one process, which a loaded machine moves less than figures of separate runs.
``--split`` times only the one reading pass, split into reading + counting (``_Fitter.over``), the
vocabularies (``finish``) and the encoding into the id array (``assemble`` of the kept frames), with
the process's peak RSS after it: run it in fresh processes, alternated with another checkout's.
``--fingerprint`` prints hashes of the fitted encoder's JSON and of the encoded training and test
rows, as training encodes them: the same with ``PYTHONPATH=<other checkout>/src`` means the same ids.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import statistics
import time
from pathlib import Path

from tasks import NUMERIC, _deepfm, setup  # noqa: E402 - sets the command's process environment first

from deepfm.data.filelist import open_chunked  # noqa: E402
import deepfm.data.delimited as delimited  # noqa: E402
from deepfm.data import stream  # noqa: E402
from deepfm.data.stream import chunk_bytes_for, encode_file, fit_streaming  # noqa: E402
from deepfm.training.trainer import predict  # noqa: E402


def timed(what: str, call, rows: dict) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    rows[what] = (time.perf_counter() - wall, time.process_time() - cpu)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--setting", default="defaults", choices=["defaults", "stripped"])
    parser.add_argument("--numeric", default="no", choices=["yes", "no"])
    parser.add_argument("--cprofile", type=Path, help="write the profile of fit + encode here")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--interleave", type=int, default=0, help="rounds of the read/fit/encode variants, in turn")
    parser.add_argument("--fingerprint", action="store_true", help="hashes of the encoder and the encoded rows")
    parser.add_argument("--split", action="store_true", help="the one reading pass, phase by phase")
    args = parser.parse_args()
    setup()
    estimator = _deepfm("off", 1, chunk_rows=65_536, window=8, setting=args.setting,
                        numeric=NUMERIC if args.numeric == "yes" else [])
    config, train = estimator.config.data, args.data / "train.csv"
    phases: dict[str, tuple[float, float]] = {}
    file = open_chunked(train, config, chunk_bytes_for(train, config.chunk_rows))
    if args.interleave:
        return interleaved(file, config, args.interleave, args.data.name)
    if args.fingerprint:
        return fingerprint(estimator, file, args.data)
    if args.split:
        return split(file, config, args.data.name)
    timed("read (parse only)", lambda: sum(frame.num_rows for frame in file.frames()), phases)
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler:
        profiler.enable()
    encoder, rows = timed("encoder fit (parse + count)", lambda: fit_streaming(file, config), phases)
    timed("encode (parse + look up)", lambda: encode_file(file, encoder, rows), phases)
    if hasattr(stream, "fit_and_encode"):  # not in the code before it (PYTHONPATH=/work/main/src for that)
        timed("fit + encode in one reading pass (what training runs)", lambda: stream.fit_and_encode(file, config), phases)
    if profiler:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.top)
        args.cprofile.parent.mkdir(parents=True, exist_ok=True)
        args.cprofile.write_text(f"# {' '.join(os.sys.argv)}\n# load {os.getloadavg()}\n" + text.getvalue())
    if not args.skip_training:
        timed("Estimator.fit (all of file → model)", lambda: estimator.fit(train, progress=False), phases)
        whole = phases["Estimator.fit (all of file → model)"]
        once = phases.get("fit + encode in one reading pass (what training runs)") or tuple(
            f + e for f, e in zip(phases["encoder fit (parse + count)"], phases["encode (parse + look up)"]))
        phases["training (the rest)"] = tuple(w - o for w, o in zip(whole, once))
        timed("scoring (encode test + predict)",
              lambda: predict(estimator.model, estimator.encoder.task, estimator.encode(args.data / "test.csv")), phases)
    print(f"{args.data.name}, {args.setting}, load {os.getloadavg()[0]:.2f}")
    print("| phase | wall (s) | CPU (s) |\n| --- | ---: | ---: |")
    for what, (wall, cpu) in phases.items():
        print(f"| {what} | {wall:.2f} | {cpu:.2f} |")


def fingerprint(estimator, file, data: Path) -> None:
    def digest(value) -> str:
        return hashlib.sha256(value if isinstance(value, bytes) else value.tobytes()).hexdigest()[:16]

    encoded, _, _ = estimator.training_rows(data / "train.csv")
    test = estimator.encode(data / "test.csv")
    print(f"{data.name}: encoder {digest(json.dumps(estimator.encoder.to_dict(), sort_keys=True).encode())}, "
          f"train ids {digest(encoded.ids)} ({encoded.ids.dtype}), values "
          f"{digest(encoded.values) if encoded.values is not None else None}, labels {digest(encoded.labels)}, "
          f"test ids {digest(test.ids)}")


def split(file, config, name: str) -> None:
    import resource

    from deepfm.data import encoders

    phases: dict[str, float] = {}

    def timing(what: str, call):
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            result = call(*args, **kwargs)
            phases[what] = time.perf_counter() - start
            return result
        return timed_call

    over = encoders._Fitter.over.__func__
    encoders._Fitter.over = classmethod(timing("read + count", over))
    encoders._Fitter.finish = timing("vocabularies", encoders._Fitter.finish)
    stream.assemble = timing("encode into the id array", stream.assemble)
    start = time.perf_counter()
    stream.fit_and_encode(file, config)
    phases["the one reading pass"] = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: " + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in phases.items()) + f"; peak RSS {peak:.0f} MB")


def interleaved(file, config, rounds: int, name: str) -> None:
    def read(block: int):
        def run():
            delimited.PARSE_BLOCK_SIZE = block
            return sum(frame.num_rows for frame in file.frames())
        return run

    def two_passes():
        encoder, rows = fit_streaming(file, config)
        return encode_file(file, encoder, rows)

    variants = {"read, 16 MB parse blocks": read(16 << 20), "read, 1 MB parse blocks": read(1 << 20),
                "fit, then encode (two reading passes)": two_passes,
                "fit + encode in one reading pass": lambda: stream.fit_and_encode(file, config)}
    times: dict[str, list[tuple[float, float]]] = {what: [] for what in variants}
    for _ in range(rounds):
        for what, call in variants.items():
            phases: dict[str, tuple[float, float]] = {}
            timed(what, call, phases)
            times[what].append(phases[what])
    print(f"{name}, {rounds} rounds in turn, load {os.getloadavg()[0]:.2f}")
    print("| variant | wall (s), median | CPU (s), median |\n| --- | ---: | ---: |")
    for what, runs in times.items():
        print(f"| {what} | {statistics.median(w for w, _ in runs):.2f} | {statistics.median(c for _, c in runs):.2f} |")


if __name__ == "__main__":
    main()
