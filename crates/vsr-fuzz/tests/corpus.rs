//! Replays every checked-in corpus file (`fuzz/corpus/<target>/`) through its target: an input
//! that once crashed a target, once added to the corpus, stays a regression test. Fails if a
//! target's corpus is missing or nearly empty, so it cannot pass without running anything.

use std::path::{Path, PathBuf};

/// Fewest corpus files a target must have.
const FILES_MIN: usize = 5;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let directory = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("corpus {}: {error}", directory.display()))
        .map(|item| item.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_runs_without_panicking() {
    for target in vsr_fuzz::TARGETS {
        let files = corpus_files(target.name);
        assert!(
            files.len() >= FILES_MIN,
            "corpus of {} has {} files, expected at least {FILES_MIN}",
            target.name,
            files.len()
        );
        for file in &files {
            let data = std::fs::read(file).expect("a readable corpus file");
            let outcome = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(
                outcome.is_ok(),
                "{} panicked on {}",
                target.name,
                file.display()
            );
        }
        println!("{}: {} files replayed", target.name, files.len());
    }
}

#[test]
fn every_seed_runs_without_panicking() {
    for target in vsr_fuzz::TARGETS {
        let seeds = vsr_fuzz::seeds::seeds(target.name);
        assert!(!seeds.is_empty(), "no seeds for {}", target.name);
        for seed in &seeds {
            (target.run)(seed);
        }
    }
}

#[test]
fn seeds_decode() {
    // The frame seeds are valid frames: each decodes (the target's property checks then run).
    for seed in vsr_fuzz::seeds::seeds("frame") {
        let (&control, frame) = seed.split_first().expect("a control byte");
        let receiver = if control & 3 == 3 {
            vsr::Receiver::client(vsr_fuzz::CLUSTER, vsr_fuzz::REPLICA_COUNT)
        } else {
            let config = vsr::Config::new(vsr_fuzz::CLUSTER, vsr_fuzz::REPLICA_COUNT);
            vsr::Receiver::replica(&config, control & 3)
        };
        vsr::wire::decode(frame, &receiver).expect("a seed frame decodes");
    }
}

/// Writes the seeds to `VSR_FUZZ_SEEDS` (default: `fuzz-seeds` in cargo's temporary directory
/// for tests), one directory per target.
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh to build the starting corpus"]
fn write_seeds() {
    let root = std::env::var_os("VSR_FUZZ_SEEDS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-seeds"),
        PathBuf::from,
    );
    for target in vsr_fuzz::TARGETS {
        let directory = root.join(target.name);
        std::fs::create_dir_all(&directory).expect("create the seed directory");
        for (index, seed) in vsr_fuzz::seeds::seeds(target.name).iter().enumerate() {
            std::fs::write(directory.join(format!("seed-{index:02}")), seed).expect("write");
        }
    }
}
