//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same harnesses
//! the fuzz targets run, on stable Rust without any fuzzing tool: every input the fuzzer
//! kept keeps passing under `cargo test --workspace`.
//!
//! Inputs that crashed live in `fuzz/regressions/` and are replayed by the tests below,
//! each naming the bug it found (all fixed; a new finding goes in `#[ignore]`d with its
//! bug named, and the fix un-ignores it).

use broker_fuzz_harness::TARGETS;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn harness(target: &str) -> fn(&[u8]) {
    match TARGETS.iter().find(|t| t.name == target) {
        Some(t) => t.run,
        None => panic!("no fuzz target {target}"),
    }
}

/// Runs every file of a folder through a target's harness; fails naming each file that
/// panicked.
fn replay_dir(target: &str, dir: &Path) -> usize {
    let run = harness(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).unwrap_or_default();
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
    files.len()
}

fn replay_corpus(target: &str) {
    let n = replay_dir(target, &fuzz_dir().join("corpus").join(target));
    assert!(n > 0, "{target}: empty corpus");
}

/// A crash input kept in fuzz/regressions/<target>/<file>.
fn regression(target: &str, file: &str) {
    let data = std::fs::read(fuzz_dir().join("regressions").join(target).join(file))
        .unwrap_or_else(|e| panic!("{target}/{file}: {e}"));
    harness(target)(&data);
}

/// A regression input that must finish within `limit` (the bug is unbounded work, not a
/// panic): run on its own thread so a hang fails the test instead of stalling the suite.
/// The bound is thousands of times what the fixed code needs, so it is not timing-flaky.
fn regression_bounded(target: &'static str, file: &'static str, limit: Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        regression(target, file);
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{target}/{file}: still running after {limit:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{target}/{file}: panicked"),
    }
}

#[test]
fn every_corpus_folder_is_a_target() {
    for e in std::fs::read_dir(fuzz_dir().join("corpus"))
        .into_iter()
        .flatten()
    {
        let name = e.map(|e| e.file_name().to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        assert!(
            TARGETS.iter().any(|t| t.name == name),
            "corpus/{name} has no target"
        );
    }
}

#[test]
fn frame_decoder_corpus() {
    replay_corpus("frame_decoder");
}

#[test]
fn method_parse_corpus() {
    replay_corpus("method_parse");
}

#[test]
fn assembly_corpus() {
    replay_corpus("assembly");
}

#[test]
fn publish_stream_corpus() {
    replay_corpus("publish_stream");
}

#[test]
fn topic_corpus() {
    replay_corpus("topic");
}

#[test]
fn headers_corpus() {
    replay_corpus("headers");
}

#[test]
fn http_bodies_corpus() {
    replay_corpus("http_bodies");
}

/// Fixed bug: a content header whose property flags have the continuation bit (0x0001) set
/// skipped the field-table depth check (wire/src/depth.rs `check_content_header`), but
/// amq-protocol ignores that bit and parses the `headers` table anyway. Nesting
/// deeper than MAX_TABLE_DEPTH gets through; ~18,000 levels in one 126 KB frame overflow
/// the stack and kill the broker (docs/fuzzing.md). This input nests 70 levels.
#[test]
fn header_continuation_bit_skips_depth_check() {
    regression("method_parse", "header-continuation-bit-skips-depth-check");
}

/// Fixed bug: http/fields.rs `table` built field-table keys with `ShortString::from`, which
/// panics on a name over 255 bytes: a queue (or exchange, binding, definitions) body with
/// such an argument name panics the API worker.
#[test]
fn queue_argument_name_over_255_bytes() {
    regression("http_bodies", "queue-argument-name-over-255-bytes");
}

/// Fixed bug: http/fields.rs `properties` built short-string properties (content_type,
/// message_id, ...) with `ShortString::from`: a publish body with one over 255 bytes panics.
#[test]
fn publish_property_over_255_bytes() {
    regression("http_bodies", "publish-property-over-255-bytes");
}

/// Fixed bug: the old `TopicTrie::walk` tried every split of the remaining
/// words at each `#`: exponential in the number of `#`. A binding `#.#.#.#.#.#.#.#.b` and a
/// 40-word routing key take about 10 s; this input (ten `#`, 60 words) takes hours.
/// Fuzzing found 124-byte inputs that ran past libFuzzer's 10 s timeout. One such binding
/// stalls every publish to that exchange (the publishing channel routes).
#[test]
fn topic_hash_chain_is_bounded() {
    regression_bounded(
        "topic",
        "hash-chain-exponential-walk",
        Duration::from_secs(10),
    );
}

/// Fixed bug, found by fuzzing the bounded trie: runs of `#` collapse into one node, so
/// `#.#.#.*` and `#.*` bound to one destination shared it, and removing one binding took
/// the other's route with it. The trie now counts the keys that put a destination there.
#[test]
fn collapsed_hash_unbind_keeps_the_other_binding() {
    regression("topic", "collapsed-hash-unbind-took-the-other-binding-1");
    regression("topic", "collapsed-hash-unbind-took-the-other-binding-2");
}
