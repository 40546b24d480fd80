//! Labels as people type them on a command line: `k=v[,k=v…]`.

use std::collections::BTreeMap;

/// A pair of a label list that is not `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {pair:?} is not k=v")]
pub struct LabelSyntaxError {
    /// The pair as given.
    pub pair: String,
}

/// Parses `k=v,k2=v2`: pairs separated by commas, whitespace around keys and values dropped,
/// empty pairs skipped (so the empty text is no labels). Only the syntax is checked here: keys and
/// values are validated with the object that carries them.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, LabelSyntaxError> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| LabelSyntaxError {
                pair: pair.to_string(),
            })?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_with_spaces_and_empty_pairs() {
        let l = parse_labels("app=web, tier=front,,").unwrap_or_default();
        assert_eq!(l.len(), 2);
        assert_eq!(l["tier"], "front");
        assert!(parse_labels("").is_ok_and(|l| l.is_empty()));
        assert_eq!(
            parse_labels("a=b=c").ok().and_then(|l| l.get("a").cloned()),
            Some("b=c".into())
        );
    }

    #[test]
    fn a_pair_without_equals_is_named_in_the_error() {
        let e = parse_labels("app=web,oops").err();
        assert_eq!(e.as_ref().map(|e| e.pair.as_str()), Some("oops"));
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("label \"oops\" is not k=v")
        );
    }
}
