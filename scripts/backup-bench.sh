#!/usr/bin/env bash
# Backup and restore of a local 3-replica cluster holding KEYS values of VALUE_SIZE bytes, while
# `vsr bench` writes 2,000 puts/s to it: prints the backup's size and time, the backup client's
# and the replicas' memory, and the restore's time. Everything it creates is removed on exit.
#
# Usage: scripts/backup-bench.sh [KEYS] [VALUE_SIZE]    (defaults 200000 1000)
# Needs a release build (cargo build --release -p vsr-cli), curl, bc and GNU time, and the
# loopback ports 47101-47103 and 47200-47202.
set -euo pipefail
cd "$(dirname "$0")/.."
VSR=$PWD/target/release/vsr
KEYS=${1:-200000}; VALUE=${2:-1000}
D=$(mktemp -d "${TMPDIR:-/tmp}/vsr-backup-bench.XXXX"); trap 'kill $(jobs -p) 2>/dev/null; sleep 1; rm -rf "$D"' EXIT
A=127.0.0.1:47101,127.0.0.1:47102,127.0.0.1:47103
for i in 0 1 2; do $VSR format --cluster 9 --replica $i --replica-count 3 $D/r$i >/dev/null; done
for i in 0 1 2; do $VSR start --cluster 9 --addresses $A --insecure --metrics 127.0.0.1:4720$i $D/r$i 2>$D/log$i & done
sleep 2
$VSR bench --addresses $A --cluster 9 --insecure --keys $KEYS --value-size $VALUE --requests $KEYS --fill --clients 64 --json > $D/fill.json
echo "filled: $(du -sh $D/r0 | cut -f1) on replica 0"
# A writer runs during the backup.
$VSR bench --addresses $A --cluster 9 --insecure --keys $KEYS --value-size $VALUE --requests 2000000 --rate 2000 --clients 16 --json > $D/during.json 2>&1 &
sleep 2
start=$(date +%s.%N)
/usr/bin/time -f "backup client: %e s wall, %M KiB max RSS" $VSR backup --cluster 9 --addresses $A --insecure $D/backup.vsr
end=$(date +%s.%N)
echo "backup file: $(stat -c %s $D/backup.vsr) bytes in $(echo "$end - $start" | bc) s"
for i in 0 1 2; do echo "replica $i: $(curl -s 127.0.0.1:4720$i/metrics | grep '^process_resident_memory_bytes ')"; done
start=$(date +%s.%N)
/usr/bin/time -f "restore: %e s wall, %M KiB max RSS" $VSR restore $D/backup.vsr --cluster 10 --replica-count 3 $D/n0 $D/n1 $D/n2 >/dev/null
end=$(date +%s.%N)
echo "restore of 3 directories in $(echo "$end - $start" | bc) s"
