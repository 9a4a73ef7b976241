//! The committed fuzz corpus (`fuzz/corpus/<target>/`) replayed through the fuzz targets' own bodies, so every input
//! the fuzzer found interesting stays an answer, not a crash, in every CI run (the fuzzing itself is
//! `scripts/fuzz.sh`, nightly).

#[path = "../../fuzz/src/lib.rs"]
mod targets;

#[test]
fn fuzz_corpus_replays_without_a_crash() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in targets::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for fuzz target {name}");
        for input in &inputs {
            let data = std::fs::read(input).expect("corpus file");
            target(&data);
        }
        println!(
            "fuzz target {name}: {} corpus inputs replayed",
            inputs.len()
        );
    }
}
