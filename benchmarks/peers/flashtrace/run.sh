#!/usr/bin/env bash
# flowroutes and FlashTrace side by side on SmolLM2 (issue 20, item 4): one command, four steps (bench.py's doc).
#   bash benchmarks/peers/flashtrace/run.sh              (or: make bench-flashtrace)
# Environment: PRODUCT_PYTHON (default .venv/bin/python), CELLS (prompt lengths x answer lengths to run, default
# "256x16 256x64 1024x16"), REPEATS (default 3), THREADS (torch and numba threads, default 1: on a machine whose
# cores other work keeps busy, threads wait for each other; see benchmarks/generation_speed.py), SKIP_WHY (why the
# issue's other cells were not run), RESULTS (default benchmarks/peers/flashtrace/results.json). Writes RESULTS and
# prints the table.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
product="${PRODUCT_PYTHON:-$root/.venv/bin/python}"
cells="${CELLS:-256x16 256x64 1024x16}"
repeats="${REPEATS:-3}"
threads="${THREADS:-1}"
why="${SKIP_WHY:-left out of this run (CELLS)}"
results="${RESULTS:-$here/results.json}"
[ -x "$here/.venv/bin/python" ] || bash "$here/setup.sh"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" NUMBA_NUM_THREADS="$threads"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
prompts=$(for c in $cells; do echo "${c%x*}"; done | sort -nu | tr '\n' ' ')
answers=$(for c in $cells; do echo "${c#*x}"; done | sort -nu | tr '\n' ' ')
skip=""
for p in $prompts; do for k in $answers; do
    case " $cells " in *" ${p}x${k} "*) ;; *) skip="$skip ${p}x${k}" ;; esac
done; done
for p in 256 1024; do for k in 16 64 256; do  # the issue's cells that are not asked for at all
    case " $cells $skip " in *" ${p}x${k} "*) ;; *) skip="$skip ${p}x${k}" ;; esac
done; done
bench="$here/bench.py"
"$product" "$bench" prepare --prompts $prompts --answers $answers --skip $skip --skip-why "$why"
"$product" "$bench" flowroutes --repeats "$repeats"
"$here/.venv/bin/python" "$bench" flashtrace --repeats "$repeats" 2> >(grep -v '%|' >&2)
"$product" "$bench" report --out "$results" --command "CELLS=\"$cells\" REPEATS=$repeats THREADS=$threads make bench-flashtrace"
