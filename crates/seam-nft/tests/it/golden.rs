//! The nf_tables batches, byte for byte. The golden files were recorded from the hand-written
//! encoder `seam-linux` used before `seam_nft::msg` (whose rules `nft list` read back as their
//! text, a privileged test in `seam-linux` holds that), one `# what it does` line and one line of
//! hex per message. A new case (say, a new `TableOp`) is recorded with `SEAM_GOLDEN_WRITE=1 cargo
//! test -p seam-nft --test it golden`, once the privileged test of `seam-linux` shows `nft` reads
//! what it sends as intended; existing files must not change.

use std::path::Path;

use seam_nft::Batch;

use crate::cases::{cases, TABLE};

/// The messages of a golden file: what each does and its bytes.
fn golden(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/it/golden/{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let mut out = Vec::new();
    while let Some(what) = lines.next() {
        let what = what
            .strip_prefix("# ")
            .expect("a `# what` line")
            .to_string();
        let hex = lines.next().expect("a line of hex after the `# what` line");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        out.push((what, bytes));
    }
    out
}

/// Records a batch as its golden file.
fn write(name: &str, batch: &Batch<'_>) {
    let mut text = String::new();
    let all = messages(batch.bytes());
    for (i, message) in all.iter().enumerate() {
        let what = if i == 0 {
            "batch begin".to_string()
        } else if i == all.len() - 1 {
            "batch end".to_string()
        } else {
            batch
                .operation(batch.first_seq() + u32::try_from(i - 1).unwrap())
                .unwrap()
        };
        let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!("# {what}\n{hex}\n"));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/it/golden/{name}.txt"));
    std::fs::write(path, text).unwrap();
}

/// A batch cut into its messages at their netlink lengths.
fn messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(
            len >= 16 && len.is_multiple_of(4) && len <= rest.len(),
            "bad length {len}"
        );
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

#[test]
fn every_batch_is_byte_for_byte_what_the_golden_file_holds() {
    for (name, ops) in cases() {
        let batch = Batch::new(TABLE, &ops);
        if std::env::var_os("SEAM_GOLDEN_WRITE").is_some() {
            write(name, &batch);
        }
        let expected = golden(name);
        let got = messages(batch.bytes());
        assert_eq!(got.len(), expected.len(), "{name}: number of messages");
        assert_eq!(batch.len() + 2, expected.len(), "{name}: answered messages");
        assert_eq!(expected[0].0, "batch begin");
        assert_eq!(expected[expected.len() - 1].0, "batch end");
        for (i, (got, (what, want))) in got.iter().zip(&expected).enumerate() {
            if *got != want.as_slice() {
                let at = got.iter().zip(want).position(|(a, b)| a != b);
                panic!(
                    "{name}: message {i} ({what}) differs at byte {at:?} (lengths {} and {})",
                    got.len(),
                    want.len()
                );
            }
        }
        // The answered messages are numbered from first_seq and named as before.
        for (i, (what, _)) in expected[1..expected.len() - 1].iter().enumerate() {
            let seq = batch.first_seq() + u32::try_from(i).unwrap();
            assert_eq!(
                batch.operation(seq).as_deref(),
                Some(what.as_str()),
                "{name}: seq {seq}"
            );
        }
        assert_eq!(batch.operation(0), None);
        assert_eq!(batch.operation(batch.last_seq() + 1), None);
    }
}

#[test]
fn an_empty_batch_is_its_markers_alone() {
    let batch = Batch::new(TABLE, &[]);
    assert!(batch.is_empty());
    assert_eq!(messages(batch.bytes()).len(), 2);
    assert_eq!(batch.first_seq(), 1);
    assert_eq!(batch.last_seq(), 0);
}
