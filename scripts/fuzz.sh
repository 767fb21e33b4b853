#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   run each target in turn (default 420 s)
#   scripts/fuzz.sh cmin [TARGET...]                     minimise the committed corpus
#   scripts/fuzz.sh list                                 the targets
#
# One fuzzing process at a time, under nice 19 (the machine is shared). New inputs go to
# fuzz/corpus/<target>/ (commit them after `cmin`); crashes, timeouts and OOMs are written
# to fuzz/artifacts/<target>/ and fuzzing goes on (-fork=1 -ignore_crashes=1). Total CPU
# time of the runs is printed at the end. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP lets stable accept them.
export RUSTC_BOOTSTRAP=1
TARGET_DIR="$PWD/target/fuzz"
# no sanitizer: the project denies unsafe code, and ASan would halve the executions/s
FLAGS=(-s none --target-dir "$TARGET_DIR")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

all_targets() { sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^broker-fuzz$'; }

case "${1:-}" in
  list)
    all_targets
    exit 0
    ;;
  cmin)
    shift
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(all_targets)
    nice -n 19 cargo fuzz build "${FLAGS[@]}"
    for t in "${targets[@]}"; do
      echo "== cmin $t: $(ls fuzz/corpus/"$t" | wc -l) files before"
      nice -n 19 cargo fuzz cmin "${FLAGS[@]}" "$t" "fuzz/corpus/$t" -- -timeout=2 2>&1 | tail -2
      echo "   $(ls fuzz/corpus/"$t" | wc -l) files after"
    done
    exit 0
    ;;
esac

secs="${1:-420}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(all_targets)

echo "== build"
nice -n 19 cargo fuzz build "${FLAGS[@]}"
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "== $t for ${secs}s ($(date -u +%H:%M:%S))"
  nice -n 19 cargo fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
    >"fuzz/artifacts/$t.log" 2>&1 || echo "   (exit $?)"
  grep -E '^#[0-9]+: cov|stat::number_of_executed_units|crash|Timeout|oom' "fuzz/artifacts/$t.log" | tail -3 || true
  echo "   artifacts: $(ls "fuzz/artifacts/$t" | wc -l)"
done
# `times` must run in this shell, not in a pipeline's subshell, to see its children
times >"fuzz/artifacts/cpu-times"
echo "== CPU time of the fuzzing processes (user, system): $(tail -1 fuzz/artifacts/cpu-times)"
