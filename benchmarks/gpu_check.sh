#!/usr/bin/env bash
# The CUDA checks in one run, for a machine whose python3 holds a CUDA build of torch (no network needed):
#   1. the test suite (tests/test_cuda.py runs only there; the command line's default device, auto, is cuda there);
#   2. benchmarks/run.py on the GPU (BENCH_DEVICE=cuda): the bare MLP, deepfm at its defaults (fp32, bf16)
#      and DeepCTR-Torch at its defaults, on the Criteo-like, long-tail and one-hot shapes;
#   3. where the GPU step spends its time: benchmarks/profile_step.py --device cuda at the defaults (Criteo shape).
# Wheels of what that python3 lacks (pydantic, FastAPI, DeepCTR-Torch, ...) go in .whl/ beforehand; the suite needs
# pytest-xdist and pytest-timeout there. Figures and logs land in $OUT (default gpu_out/). Each step has its own time
# limit (defaults 150 + 300 + 80 s: one 600 s device command with the set-up), so a slow one leaves the rest their time.
# BASELINE=DIR (a folder holding another version's src/, e.g. `git archive <commit> src | tar -x -C DIR`) also runs
# deepfm's fp32 rows with that version in the same run, an A/B on one machine (BASELINE_S, default 60 s: lower BENCH_S
# to keep within 600 s, e.g. BENCH_S=240 with fewer ROWS); ROWS overrides the rows step 2 runs (run.py --only's words,
# one a line).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
SITE=/tmp/deepfm-site
shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]})); then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" || exit
fi
export PYTHONPATH=$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
export DEEPFM_PYTHON=python3 PEERS_PYTHON=python3 BENCH_DEVICE=cuda

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpus: $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"

TESTS=${TESTS:-tests}  # e.g. TESTS="tests/test_cuda.py tests/test_cli.py" where device time is short
SUITE_S=${SUITE_S:-150}
BENCH_S=${BENCH_S:-300}
timeout -k 10 "$SUITE_S" python3 -m pytest -p no:cacheprovider -n 12 --timeout 120 -rfE $TESTS 2>&1 | tail -c 200000 > "$OUT/pytest.log"
echo "pytest exit ${PIPESTATUS[0]}"
tail -n 40 "$OUT/pytest.log"

rm -f benchmarks/.results/latest.json
mapfile -t rows <<< "${ROWS:-bare MLP (ceiling)
bare MLP bf16
deepfm DeepFM defaults ·
deepfm DeepFM defaults bf16
DeepCTR-Torch DeepFM defaults}"
for i in "${!rows[@]}"; do [[ -n ${rows[i]} ]] || unset "rows[i]"; done  # an empty word would select every row
timeout -k 10 "$BENCH_S" python3 benchmarks/run.py --repeat 1 --shapes criteo longtail onehot --only "${rows[@]}" \
  2>&1 | tee "$OUT/run.log" | grep -v "^ *{"
echo "run.py exit ${PIPESTATUS[0]}"
cp benchmarks/.results/latest.json "$OUT/run.json" 2>/dev/null || echo "run.py left no table (see run.log)"

if [[ -n ${BASELINE:-} ]]; then  # the same rows of deepfm with the baseline's library (run.py itself is this one's)
  base=$(cd "$BASELINE" && pwd) && [[ -d $base/src/deepfm ]] || { echo "BASELINE $BASELINE holds no src/deepfm"; exit 2; }
  rm -f benchmarks/.results/latest.json
  PYTHONPATH=$base/src:$SITE timeout -k 10 "${BASELINE_S:-60}" python3 benchmarks/run.py --repeat 1 \
    --shapes criteo longtail onehot --only "deepfm DeepFM defaults ·" 2>&1 | tee "$OUT/run_baseline.log" | grep -v "^ *{"
  echo "baseline run.py exit ${PIPESTATUS[0]}"
  cp benchmarks/.results/latest.json "$OUT/run_baseline.json" 2>/dev/null || echo "the baseline left no table"
fi

PROFILE_S=${PROFILE_S:-80}
timeout -k 10 "$PROFILE_S" python3 benchmarks/profile_step.py benchmarks/.data --setting defaults --device cuda --steps 30 \
  > "$OUT/profile_step_cuda.txt" 2>&1
echo "profile_step.py exit $?"
head -n 20 "$OUT/profile_step_cuda.txt"
