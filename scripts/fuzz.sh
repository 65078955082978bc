#!/usr/bin/env bash
# Fuzzes one target of crates/vsr-fuzz with AFL++ on the stable toolchain.
#
# Usage: scripts/fuzz.sh TARGET [SECONDS]
#   TARGET   one of: frame state_transfer wal checkpoint kv client_table
#   SECONDS  how long to fuzz (default 600)
#
# Installs cargo-afl (and builds its AFL++) if missing, builds the harness, and fuzzes starting
# from the checked-in corpus fuzz/corpus/TARGET (or, when that is empty, from seeds the seed
# test writes). Findings go to $FUZZ_OUT/TARGET (default: target/fuzz-out/TARGET, emptied
# first). With FUZZ_UPDATE_CORPUS=1, the queue is then minimized with `cargo afl cmin` into
# fuzz/corpus/TARGET; files named regression-* stay. Prints AFL's figures from fuzzer_stats and
# exits non-zero if AFL saved a crash. Runs under `nice -n 19`.
set -euo pipefail

target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${FUZZ_OUT:-$target_dir/fuzz-out}/$target
corpus=$root/fuzz/corpus/$target

if ! cargo afl --version >/dev/null 2>&1; then
    cargo install cargo-afl
fi
afl_data=${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs
if ! compgen -G "$afl_data/rustc-*/afl.rs-*/afl/bin/afl-fuzz" >/dev/null; then
    cargo afl config --build
fi
afl_bin=$(dirname "$(compgen -G "$afl_data/rustc-$(rustc -V | awk '{print $2}')*/afl.rs-*/afl/bin/afl-fuzz" | head -1)")

nice -n 19 cargo afl build -p vsr-fuzz --features afl --release
harness=$target_dir/release/vsr-fuzz
if ! "$harness" "$target" </dev/null >/dev/null 2>&1; then
    "$harness" "$target" </dev/null || true
    exit 2
fi

input=$corpus
if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
    seeds=$target_dir/fuzz-seeds
    rm -rf "$seeds"
    VSR_FUZZ_SEEDS=$seeds nice -n 19 cargo test -p vsr-fuzz --test corpus write_seeds -- --ignored
    input=$seeds/$target
fi

rm -rf "$out"
mkdir -p "$out"
AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
    nice -n 19 cargo afl fuzz -V "$seconds" -i "$input" -o "$out" -- "$harness" "$target" \
    >"$out/afl.log" 2>&1 || { tail -30 "$out/afl.log"; exit 1; }

stats=$out/default/fuzzer_stats
for field in run_time execs_done execs_per_sec corpus_count bitmap_cvg edges_found \
    total_edges saved_crashes saved_hangs; do
    printf '%-14s %s\n' "$field" "$(awk -F' *: *' -v key="$field" '$1 == key { print $2 }' "$stats")"
done

if [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ]; then
    minimized=$out/cmin
    AFL_SKIP_CPUFREQ=1 nice -n 19 cargo afl cmin -i "$out/default/queue" -o "$minimized" \
        -- "$harness" "$target" >"$out/cmin.log" 2>&1 || true
    if [ -z "$(ls -A "$minimized" 2>/dev/null)" ]; then
        # AFL++ 4.40's Python afl-cmin records no tuples for this persistent-mode harness (it
        # keeps none of the files); the shell version that ships beside it works.
        rm -rf "$minimized"
        AFL_SKIP_CPUFREQ=1 nice -n 19 "$afl_bin/afl-cmin.bash" -i "$out/default/queue" \
            -o "$minimized" -- "$harness" "$target" >>"$out/cmin.log" 2>&1
    fi
    mkdir -p "$corpus"
    find "$corpus" -maxdepth 1 -type f ! -name 'regression-*' -delete
    for file in "$minimized"/*; do
        cp "$file" "$corpus/$(sha256sum "$file" | cut -c1-16)"
    done
    echo "corpus: $(ls "$corpus" | wc -l) files, $(du -sh "$corpus" | cut -f1)"
fi

crashes=$(awk -F' *: *' '$1 == "saved_crashes" { print $2 }' "$stats")
if [ "$crashes" != 0 ]; then
    echo "crashes saved in $out/default/crashes" >&2
    exit 1
fi
