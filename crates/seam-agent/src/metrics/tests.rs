use std::sync::Arc;

use seam_nft::rule::NftVerdict;
use seam_nft::NftRule;

use super::*;

fn scrape(metrics: &AgentMetrics) -> String {
    encode(&registry(metrics))
}

/// The value of the sample line that starts with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
}

fn rule(comment: &str, verdict: NftVerdict) -> Arc<NftRule> {
    Arc::new(NftRule {
        matches: Vec::new(),
        log_prefix: None,
        sample: None,
        verdict,
        comment: comment.to_string(),
    })
}

#[test]
fn a_cni_request_moves_its_verb_and_results_histogram() {
    let m = AgentMetrics::default();
    let series = r#"seam_agent_cni_request_duration_seconds_count{verb="ADD",result="ok"}"#;
    assert_eq!(sample(&scrape(&m), series), None);
    m.observe_cni(Verb::ADD, true, Duration::from_millis(3));
    m.observe_cni(Verb::ADD, true, Duration::from_millis(4));
    m.observe_cni(Verb::DEL, false, Duration::from_millis(1));
    let text = scrape(&m);
    assert_eq!(sample(&text, series), Some(2.0));
    assert_eq!(
        sample(
            &text,
            r#"seam_agent_cni_request_duration_seconds_count{verb="DEL",result="error"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
}

#[test]
fn reconcile_and_firewall_writes_are_timed() {
    let m = AgentMetrics::default();
    m.observe_reconcile(true, Duration::from_millis(2));
    m.observe_reconcile(false, Duration::from_millis(2));
    m.observe_firewall_apply(ApplyMode::whole, true, Duration::from_millis(20));
    let text = scrape(&m);
    assert_eq!(
        sample(&text, "seam_agent_reconcile_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "seam_agent_reconcile_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"seam_agent_firewall_apply_duration_seconds_count{mode="whole",result="ok"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn drops_are_the_kernel_counters_of_drop_rules_summed_by_tier_and_reason() {
    let m = AgentMetrics::default();
    let mut model = TableModel::default();
    model.chains.insert(
        "b_1".into(),
        ChainBody::Rules(vec![
            rule("np/x/web/ingress/0", NftVerdict::Accept),
            rule("ns-isolation/ingress", NftVerdict::Drop),
        ]),
    );
    model.chains.insert(
        "a_2".into(),
        ChainBody::Rules(vec![
            rule("anp/deny-db/ingress/0", NftVerdict::Drop),
            rule("anp/deny-db/ingress/1", NftVerdict::Drop),
        ]),
    );
    m.table_written(&model);
    let counted = |p, b| RuleCounter {
        packets: p,
        bytes: b,
    };
    let counters = BTreeMap::from([
        ("np/x/web/ingress/0".to_string(), counted(100, 10_000)),
        ("ns-isolation/ingress".to_string(), counted(3, 180)),
        ("anp/deny-db/ingress/0".to_string(), counted(5, 300)),
        ("anp/deny-db/ingress/1".to_string(), counted(2, 120)),
    ]);
    m.counters_read(&counters);
    let text = scrape(&m);
    assert_eq!(sample(&text, "seam_agent_firewall_rules"), Some(4.0));
    assert_eq!(
        sample(
            &text,
            r#"seam_agent_drop_packets_total{tier="namespace",reason="isolation"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"seam_agent_drop_packets_total{tier="admin",reason="rule"}"#
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"seam_agent_drop_bytes_total{tier="admin",reason="rule"}"#
        ),
        Some(420.0)
    );
    // Allowed traffic is not a drop, and no label names a rule.
    assert!(!text.contains("np/x/web"), "{text}");
}

#[test]
fn address_totals_are_gauges() {
    let m = AgentMetrics::default();
    m.addresses(AddressTotals {
        leases: 7,
        free: 50,
        blocks: 1,
    });
    let text = scrape(&m);
    assert_eq!(sample(&text, "seam_agent_leases"), Some(7.0));
    assert_eq!(sample(&text, "seam_agent_addresses_free"), Some(50.0));
    assert_eq!(sample(&text, "seam_agent_blocks"), Some(1.0));
}
