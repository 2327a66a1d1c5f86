#!/usr/bin/env bash
# One GPU session's checks, as one script of ~8 minutes (README "GPU"):
#   1. benchmarks with the GPU to themselves: BERT-base MLM step (preln Post/Pre-LN vs Hugging Face,
#      eager and compiled), the IWSLT-size translation step (preln vs torch.nn.Transformer,
#      fp32 and bf16) on real debdocs-de-en batches, and one profiled bf16 step of each
#      (op_profile.py: kernels, casts, the ops that take the time);
#   2. the paper-size Fig. 4 on debdocs-de-en (6+6 layers, d 512, 4096-token batches, bf16): Post-LN
#      with 4000 warm-up updates, Post-LN without, Pre-LN without at lr 5e-4 and 1e-3 (and 1e-3 in
#      fp32), Pre-LN at lr 5e-4 again with train.compile (padded to multiples of 8: its tokens/s
#      and valid NLL next to the eager run's), all side by side on the one GPU for TRAIN_SECONDS, then stopped (SIGTERM: checkpoint)
#      and scored on the test split's first 500 sentences (beam 5); the test suite runs meanwhile (on CUDA where it can);
#   3. a summary table on stdout and everything in OUT/results.tgz.
#
#   bash benchmarks/gpu_check.sh OUT [TRAIN_SECONDS]      (env: PRELN_DATA_ROOT, PYTHON)
#
# GPU_CHECK_DRY=1 runs the same steps on the CPU at tiny sizes (fp32, tests only collected), so
# that the script itself is known to work before a GPU's minutes are spent on it.
set -u
OUT=${1:?usage: gpu_check.sh OUT [TRAIN_SECONDS]}
SECS=${2:-120}  # with the benchmarks and the scoring, the whole script stays under a device call's 600 s
PY=${PYTHON:-python3}
DATA=${PRELN_DATA_ROOT:-../shared/data}
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
  DEV=cpu PRECS=fp32 MT_UPDATES=2 BERT=(--tiny --no-compile) PYTEST=(--co -q) EVAL=(--limit 10 --max-len-a 1.2 --max-len-b 10)
  OP_PREC=fp32 OP_SIZE=(--batch 4 --len 8)
  # the runs end by themselves after 10 small updates (TRAIN_SECONDS is then only a hang guard): six
  # trainers and the test collection share 2 cores, so a fixed time would be mostly start-up; and
  # eager (Inductor's C++ build of the compiled run takes over 5 minutes on 2 busy cores; the
  # compiled CPU path has its own test); 2,000 training pairs and a 1,000-piece vocabulary, so that
  # the six runs do not each train SentencePiece on (and cache) the whole corpus
  TINY=(--set model.d_model=32 --set model.d_ffn=64 --set model.encoder_layers=1 --set model.decoder_layers=1
        --set data.max_valid_examples=100 --set "train.precision='fp32'" --set train.max_updates=10 --set data.max_tokens=1024
        --set train.compile=false --set data.max_train_examples=2000 --set data.vocab_size=1000
        --set train.threads=1)
  # one thread per process: a 2-thread process whose second thread waits for a busy core spends a
  # scheduler slice (~5 ms here) at every parallel region, so twelve such processes on 2 cores crawl
  export OMP_NUM_THREADS=1
else
  # test BLEU on the first 500 test sentences: beam 5 over all 3,105 took ~3.4 s a batch of ~37 with
  # five scorings and the tests sharing the machine, ~5 minutes (the first GPU session)
  # the tests: a line per test (-v), so that a suite cut by its time limit still names what failed;
  # not the dry run of this script (minutes of CPU work beside the GPU's runs)
  PYTEST=(-v -rfE --tb=short --deselect tests/test_benchmarks.py::test_the_gpu_check_script_runs_dry_on_the_cpu)
  DEV=cuda PRECS="fp32 bf16" MT_UPDATES=25 BERT=(--steps 15 --warmup 3) EVAL=(--limit 500) TINY=()
  OP_PREC=bf16 OP_SIZE=()
fi
W=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$W/steps.log"; }
finish() {
  pkill -P "$WATCHDOG" sleep 2>/dev/null; kill "$WATCHDOG" 2>/dev/null  # its sleep too
  log "packing"
  # metrics, logs, configs and JSON only: checkpoints of d-512 models exceed what a device call returns
  tar -czf "$OUT/results.tgz" --exclude=checkpoints --exclude='*.safetensors' --exclude=spm.model -C "$W" . 2>/dev/null
  cp "$W/summary.json" "$OUT/" 2>/dev/null
}
trap finish EXIT
# a device call that runs past its limit is killed with all it wrote: at DEADLINE seconds (default
# 570, of a call's 600) the script stops waiting and packs what there is. bash runs a TERM trap
# between commands and inside `wait`, so this cuts phase 2; the steps before have their own limits
DEADLINE=${GPU_CHECK_DEADLINE:-570}
trap 'log "deadline of $DEADLINE s: packing what there is"; exit 143' TERM
(sleep "$DEADLINE" && kill -TERM $$) > /dev/null 2>&1 &
WATCHDOG=$!

if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
fi
$PY -c "import torch, preln, sacremoses; print('torch', torch.__version__, \
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" 2>&1 | tee -a "$W/steps.log"

log "1a. BERT-base MLM benchmark"
# 200 s: at 150 the last row (Post-LN compiled) was cut in two sessions; but for its hang the third
# session's script would have taken ~420 s with TRAIN_SECONDS 100, so these 50 s and the tests' 60
# below fit in the 570
timeout 200 $PY benchmarks/bert_mlm.py "${BERT[@]}" --models preln-pre,hf,preln-post --json "$W/bench_bert.json" \
  2>&1 | grep -v Warning | tee "$W/bench_bert.log"
MT=(--config configs/iwslt14-pre.toml --set "data.corpus='tsv'" --set "data.path='$DATA/debdocs-de-en'"
    --set data.pretokenized=false --device $DEV --updates $MT_UPDATES ${TINY[@]+"${TINY[@]}"})
for prec in $PRECS; do
  log "1b. IWSLT-size translation benchmark, $prec"
  timeout 90 $PY benchmarks/throughput.py "${MT[@]}" --precision $prec --json "$W/bench_mt_$prec.json" \
    2>&1 | grep -v Warning | tee -a "$W/bench_mt.log"
done

log "1c. where a bf16 step's time goes, preln vs torch.nn.Transformer"
timeout 60 $PY benchmarks/op_profile.py --device $DEV --precision $OP_PREC ${TINY[@]+"${TINY[@]}"} \
  ${OP_SIZE[@]+"${OP_SIZE[@]}"} --json "$W/op_profile.json" 2>&1 | grep -v Warning | tee "$W/op_profile.log"

log "2. paper-size Fig. 4 on debdocs-de-en for $SECS s, side by side; tests meanwhile"
COMMON=(--data "$DATA/debdocs-de-en" --set "data.corpus='tsv'" --set data.pretokenized=false
        --set "train.precision='bf16'" --set train.valid_every=100 --set train.valid_bleu=false
        --set train.save_every=2000 --set train.log_every=50 --set train.progress=false
        --set train.threads=2)  # 6 runs and the tests share 16 cores: the GPU does the work
run() {
  local name=$1 cfg=$2
  shift 2
  # -k: a run told to stop finishes its update first, and a compiled run's first update can take
  # minutes of compiling (the third GPU session's hung there, past its device call's limit)
  timeout -k 30 -s TERM "$SECS" $PY -m preln train "$cfg" --out "$W/fig4/$name" "${COMMON[@]}" "$@" \
    ${TINY[@]+"${TINY[@]}"} > "$W/$name.train.log" 2>&1
  timeout 120 $PY -m preln evaluate "$W/fig4/$name" --splits test --beam 5 ${EVAL[@]+"${EVAL[@]}"} \
    > "$W/$name.eval.log" 2>&1
}
run post-warmup configs/iwslt14-post.toml &
run post-nowarmup configs/iwslt14-post.toml --set schedule.warmup=0 --set schedule.timescale=4000 &
run pre-lr5e-4 configs/iwslt14-pre.toml &
run pre-lr1e-3 configs/iwslt14-pre.toml --set optim.lr=1e-3 &
run pre-lr1e-3-fp32 configs/iwslt14-pre.toml --set optim.lr=1e-3 --set "train.precision='fp32'" &
run pre-lr5e-4-compiled configs/iwslt14-pre.toml --set train.compile=true --set data.pad_to_multiple=8 &
OMP_NUM_THREADS=4 PRELN_DATA_ROOT=$(cd "$DATA" && pwd) timeout -k 10 $((SECS + 120)) $PY -m pytest "${PYTEST[@]}" -p no:cacheprovider tests \
  > "$W/pytest.log" 2>&1 &
wait $(jobs -p | grep -vx "$WATCHDOG")  # the runs and the tests, not the deadline's watchdog
log "pytest: $(tail -n 1 "$W/pytest.log")"
grep -E "^(FAILED|ERROR)" "$W/pytest.log" | head -20

$PY - "$W" <<'EOF'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
summary = {}
for run in sorted((w / "fig4").iterdir()):
    m = run / "metrics.jsonl"
    rows = [json.loads(x) for x in m.read_text().splitlines() if x.strip()] if m.exists() else []
    valid = [(r["update"], round(r["valid_nll"], 3)) for r in rows if r["kind"] == "valid"]
    train = [r for r in rows if r["kind"] == "train"]
    status = json.loads((run / "status.json").read_text()) if (run / "status.json").exists() else {}
    bleu = json.loads((run / "bleu.json").read_text())["splits"]["test"] if (run / "bleu.json").exists() else {}
    tok_s = sum(r["tokens_per_s"] for r in train[2:]) / max(len(train[2:]), 1)
    summary[run.name] = {"status": status.get("status"), "update": status.get("update"), "reason": status.get("reason"),
                         "valid_nll": valid, "tokens_per_s": round(tok_s), "test": bleu}
    print(f"{run.name:>16}: {status.get('status')} at update {status.get('update')}, {tok_s:.0f} tgt tok/s, "
          f"test sacreBLEU {bleu.get('sacrebleu', '-')}, valid NLL {valid[::3]}")
(w / "summary.json").write_text(json.dumps(summary, indent=1))
EOF
