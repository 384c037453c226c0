//! Every input in the fuzz corpora (`fuzz/corpus/<target>/`: the committed seeds, plus
//! whatever a local `scripts/fuzz` run kept) must pass its target's check on stable
//! Rust, so what the fuzzer once found stays fixed without nightly or libFuzzer.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, check) in checks::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut replayed = 0;
        for path in entries.map(|e| e.expect("corpus entry").path()) {
            let data = std::fs::read(&path).expect("read a corpus input");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("fuzz target {name} fails on {}", path.display());
            }
            replayed += 1;
        }
        assert!(replayed > 0, "no corpus for fuzz target {name}");
    }
}
