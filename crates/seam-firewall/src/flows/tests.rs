use seam_nft::table::ChainBody;
use seam_nft::FlowSampling;

use super::*;
use crate::ir::{L4Match, Rule, TierChain};
use crate::render::table::Renderer;

fn rule(id: &str, action: Action) -> Rule {
    Rule {
        id: RuleId(id.into()),
        src: Vec::new(),
        dst: Vec::new(),
        l4: L4Match::Any,
        action,
        log: false,
    }
}

fn ruleset() -> NodeRuleset {
    let chains = |dir: &str| {
        vec![
            TierChain {
                tier: Tier::Admin,
                rules: vec![rule(&format!("anp/gate/{dir}/0"), Action::Pass)],
            },
            TierChain {
                tier: Tier::Namespace,
                rules: vec![
                    rule(&format!("np/prod/web/{dir}/0"), Action::Allow),
                    rule(&format!("ns-isolation/{dir}"), Action::Deny),
                ],
            },
            TierChain {
                tier: Tier::Baseline,
                rules: vec![rule(&format!("default/{dir}"), Action::Allow)],
            },
        ]
    };
    NodeRuleset {
        egress: chains("egress"),
        ingress: chains("ingress"),
        ..NodeRuleset::default()
    }
}

#[test]
fn every_sample_prefix_in_the_table_maps_back_to_its_rule() {
    let sampling = FlowSampling {
        group: 9,
        drop_rate: 20,
        allow_rate: None,
        snaplen: 128,
    };
    let model = Renderer::with_sampling(Some(sampling)).model(&ruleset());
    let map = sampled_rules(&ruleset());
    let mut seen = 0;
    for body in model.chains.values() {
        let ChainBody::Rules(rules) = body else {
            continue;
        };
        for r in rules {
            let sample = r.sample.as_ref().expect("every rule is sampled");
            let meta = &map[&sample.prefix];
            assert_eq!(seam_nft::names::nft_comment(meta.rule.as_str()), r.comment);
            // Drops and Passes are rate limited, allowed connections are not.
            assert_eq!(sample.limit.is_some(), meta.kind != SampleKind::Allow);
            seen += 1;
        }
    }
    // Namespace blocks and baselines, both directions (admin chains exist only in the classes
    // of local endpoints, and this node has none).
    assert_eq!(seen, 6);
    let iso = &map["Di:ns-isolation/ingress"];
    assert_eq!(iso.reason, FlowReason::Isolation);
    assert_eq!(iso.direction, FlowDirection::Ingress);
    assert_eq!(iso.policy, None);
    let web = &map["Ae:np/prod/web/egress/0"];
    assert_eq!(web.policy.as_deref(), Some("NetworkPolicy prod/web"));
    assert_eq!((web.tier, web.reason), (Tier::Namespace, FlowReason::Rule));
    assert_eq!(map["Ai:default/ingress"].reason, FlowReason::DefaultAllow);
    assert_eq!(
        map["Pe:anp/gate/egress/0"].policy.as_deref(),
        Some("AdminNetworkPolicy gate")
    );
}

#[test]
fn without_sampling_the_table_has_no_samples() {
    let model = Renderer::default().model(&ruleset());
    let text = seam_nft::table::full_text(&model);
    assert!(!text.contains("log"), "{text}");
    let sampled = Renderer::with_sampling(Some(FlowSampling {
        group: 9,
        drop_rate: 20,
        allow_rate: Some(500),
        snaplen: 128,
    }))
    .model(&ruleset());
    let text = seam_nft::table::full_text(&sampled);
    assert!(text.contains("limit rate over 20/second"), "{text}");
    assert!(text.contains("limit rate over 500/second"), "{text}");
    // Sampling changes the rules, so the chains get other names: an agent that restarts with
    // another setting replaces them in place.
    assert!(model.chains.keys().all(|k| !sampled.chains.contains_key(k)));
}

#[test]
fn policies_and_reasons_are_read_from_rule_ids() {
    let id = |s: &str| RuleId(s.into());
    assert_eq!(
        policy_of(&id("cnp/guard/ingress/2")).as_deref(),
        Some("ClusterNetworkPolicy guard")
    );
    assert_eq!(
        policy_of(&id("contract/web/ingress/*")).as_deref(),
        Some("Contract web")
    );
    assert_eq!(policy_of(&id("mode/multitenant/blue/egress")), None);
    assert_eq!(
        reason_of(&id("mode/multitenant/blue/egress"), Action::Deny),
        FlowReason::DefaultDeny
    );
    assert_eq!(
        reason_of(&id("banp/default/ingress/0"), Action::Deny),
        FlowReason::Rule
    );
}
