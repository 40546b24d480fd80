//! Labels as people type them on a command line: `k=v[,k=v…]`.

use std::collections::BTreeMap;

/// A pair of a label list that is not `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {pair:?} is not k=v")]
pub struct LabelSyntaxError {
    /// The pair as given.
    pub pair: String,
}

/// What [`parse_labels`] does with whitespace. The verbs that take labels have always differed
/// here and scripts rely on each verb's behaviour, so the caller says which one it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSpaces {
    /// Whitespace around keys and values is dropped and whitespace-only pairs are skipped
    /// (`seam vm attach`).
    Trimmed,
    /// The text is taken as typed: only empty pairs are skipped, a whitespace-only pair is not
    /// `k=v`, and spaces stay in keys and values, where the object's validation refuses them
    /// (`seam external add`, `seam lab vm-add`).
    Kept,
}

/// Parses `k=v,k2=v2`: pairs separated by commas, empty pairs skipped (so the empty text is no
/// labels), whitespace as `spaces` says. Only the syntax is checked here: keys and values are
/// validated with the object that carries them.
pub fn parse_labels(
    text: &str,
    spaces: LabelSpaces,
) -> Result<BTreeMap<String, String>, LabelSyntaxError> {
    let trim = |s: &str| match spaces {
        LabelSpaces::Trimmed => s.trim().to_string(),
        LabelSpaces::Kept => s.to_string(),
    };
    text.split(',')
        .filter(|pair| !trim(pair).is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| LabelSyntaxError {
                pair: pair.to_string(),
            })?;
            Ok((trim(k), trim(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use LabelSpaces::{Kept, Trimmed};

    #[test]
    fn trimmed_labels_drop_spaces_and_blank_pairs() {
        // `seam vm attach --labels`.
        let l = parse_labels("app=web, tier=front,,", Trimmed).unwrap_or_default();
        assert_eq!(l.len(), 2);
        assert_eq!(l["tier"], "front");
        assert_eq!(
            parse_labels(" a = b , ", Trimmed).ok(),
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
        assert!(parse_labels("", Trimmed).is_ok_and(|l| l.is_empty()));
        assert_eq!(
            parse_labels("a=b=c", Trimmed)
                .ok()
                .and_then(|l| l.get("a").cloned()),
            Some("b=c".into())
        );
    }

    #[test]
    fn kept_labels_are_taken_as_typed() {
        // `seam external add --labels` (clap splits at commas; the command joins them again) and
        // `seam lab vm-add --labels`: no trimming, so ` tier` stays a key the object's validation
        // refuses, and a blank pair is not k=v.
        assert_eq!(
            parse_labels("app=web, tier=db", Kept).ok(),
            Some(BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                (" tier".to_string(), "db".to_string()),
            ]))
        );
        assert_eq!(
            parse_labels("a= b ", Kept)
                .ok()
                .and_then(|l| l.get("a").cloned()),
            Some(" b ".into())
        );
        assert_eq!(
            parse_labels("a=b, ,c", Kept).err().map(|e| e.to_string()),
            Some("label \" \" is not k=v".to_string())
        );
        assert!(parse_labels("a=b,,", Kept).is_ok_and(|l| l.len() == 1));
        assert!(parse_labels("", Kept).is_ok_and(|l| l.is_empty()));
        assert_eq!(
            parse_labels("a=b=c", Kept)
                .ok()
                .and_then(|l| l.get("a").cloned()),
            Some("b=c".into())
        );
    }

    #[test]
    fn a_pair_without_equals_is_named_in_the_error() {
        for spaces in [Trimmed, Kept] {
            let e = parse_labels("app=web,oops", spaces).err();
            assert_eq!(e.as_ref().map(|e| e.pair.as_str()), Some("oops"));
            assert_eq!(
                e.map(|e| e.to_string()).as_deref(),
                Some("label \"oops\" is not k=v")
            );
        }
        // The pair is named as typed, spaces included.
        let e = parse_labels(" oops ", Trimmed).err();
        assert_eq!(e.map(|e| e.pair), Some(" oops ".to_string()));
    }
}
