//! Label selectors (pod affinity terms) and node selector terms (node affinity), compiled
//! once from the API types into forms that match without allocating.
//!
//! Semantics follow apimachinery `labels.Selector` and component-helpers
//! `nodeaffinity`: an empty label selector matches everything, a missing one nothing; a
//! node selector term with no requirements matches nothing; a requirement that cannot be
//! valid (unknown operator, `Gt` with a non-integer) makes its term match nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

/// Labels of a pod or node.
pub type Labels = BTreeMap<String, String>;

/// A compiled `metav1.LabelSelector`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelSelector {
    /// Every requirement must hold (none: everything matches).
    All(Vec<LabelRequirement>),
    /// Selects nothing: absent, or invalid.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    key: String,
    op: SetOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SetOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Compiles `sel`; `None` selects nothing (as a nil selector in a pod affinity term).
    pub fn compile(sel: Option<&meta::LabelSelector>) -> LabelSelector {
        let Some(sel) = sel else {
            return LabelSelector::Nothing;
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(LabelRequirement {
                key: k.clone(),
                op: SetOp::In(vec![v.clone()]),
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" if !values.is_empty() => SetOp::In(values),
                "NotIn" if !values.is_empty() => SetOp::NotIn(values),
                "Exists" if values.is_empty() => SetOp::Exists,
                "DoesNotExist" if values.is_empty() => SetOp::DoesNotExist,
                _ => return LabelSelector::Nothing,
            };
            reqs.push(LabelRequirement {
                key: e.key.clone(),
                op,
            });
        }
        LabelSelector::All(reqs)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            LabelSelector::Nothing => false,
            LabelSelector::All(reqs) => reqs.iter().all(|r| {
                let v = labels.get(&r.key);
                match &r.op {
                    SetOp::In(vals) => v.is_some_and(|v| vals.contains(v)),
                    SetOp::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                    SetOp::Exists => v.is_some(),
                    SetOp::DoesNotExist => v.is_none(),
                }
            }),
        }
    }
}

/// A compiled `NodeSelectorTerm`: all of its requirements must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    /// `None`: the term is invalid or empty and matches no node.
    reqs: Option<Vec<NodeRequirement>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeRequirement {
    Label {
        key: String,
        op: NodeOp,
    },
    /// `matchFields` on `metadata.name`, the only field Kubernetes supports.
    Name {
        values: Vec<String>,
        negate: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeOp {
    Set(SetOp),
    Gt(i64),
    Lt(i64),
}

impl NodeSelectorTerm {
    pub fn compile(term: &core::NodeSelectorTerm) -> NodeSelectorTerm {
        let mut reqs = Vec::new();
        for e in term.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let int = || -> Option<i64> {
                match values.as_slice() {
                    [v] => v.parse().ok(),
                    _ => None,
                }
            };
            let op = match e.operator.as_str() {
                "In" if !values.is_empty() => NodeOp::Set(SetOp::In(values)),
                "NotIn" if !values.is_empty() => NodeOp::Set(SetOp::NotIn(values)),
                "Exists" if values.is_empty() => NodeOp::Set(SetOp::Exists),
                "DoesNotExist" if values.is_empty() => NodeOp::Set(SetOp::DoesNotExist),
                "Gt" => match int() {
                    Some(n) => NodeOp::Gt(n),
                    None => return NodeSelectorTerm { reqs: None },
                },
                "Lt" => match int() {
                    Some(n) => NodeOp::Lt(n),
                    None => return NodeSelectorTerm { reqs: None },
                },
                _ => return NodeSelectorTerm { reqs: None },
            };
            reqs.push(NodeRequirement::Label {
                key: e.key.clone(),
                op,
            });
        }
        for f in term.match_fields.iter().flatten() {
            let values = f.values.clone().unwrap_or_default();
            // Kubernetes validation allows exactly one value for metadata.name.
            if f.key != "metadata.name" || values.len() != 1 {
                return NodeSelectorTerm { reqs: None };
            }
            let negate = match f.operator.as_str() {
                "In" => false,
                "NotIn" => true,
                _ => return NodeSelectorTerm { reqs: None },
            };
            reqs.push(NodeRequirement::Name { values, negate });
        }
        NodeSelectorTerm {
            reqs: (!reqs.is_empty()).then_some(reqs),
        }
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        let Some(reqs) = &self.reqs else {
            return false;
        };
        reqs.iter().all(|r| match r {
            NodeRequirement::Name { values, negate } => {
                values.iter().any(|v| v == node_name) != *negate
            }
            NodeRequirement::Label { key, op } => {
                let v = labels.get(key);
                match op {
                    NodeOp::Set(SetOp::In(vals)) => v.is_some_and(|v| vals.contains(v)),
                    NodeOp::Set(SetOp::NotIn(vals)) => v.is_none_or(|v| !vals.contains(v)),
                    NodeOp::Set(SetOp::Exists) => v.is_some(),
                    NodeOp::Set(SetOp::DoesNotExist) => v.is_none(),
                    NodeOp::Gt(n) => v
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|x| x > *n),
                    NodeOp::Lt(n) => v
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|x| x < *n),
                }
            }
        })
    }
}

/// Required node affinity: the node must match at least one term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelector {
    terms: Vec<NodeSelectorTerm>,
}

impl NodeSelector {
    pub fn compile(sel: &core::NodeSelector) -> NodeSelector {
        NodeSelector {
            terms: sel
                .node_selector_terms
                .iter()
                .map(NodeSelectorTerm::compile)
                .collect(),
        }
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        self.terms.iter().any(|t| t.matches(node_name, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> core::NodeSelectorRequirement {
        core::NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn term(exprs: Vec<core::NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm::compile(&core::NodeSelectorTerm {
            match_expressions: Some(exprs),
            match_fields: None,
        })
    }

    #[test]
    fn label_selector_semantics() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(!LabelSelector::compile(None).matches(&l));
        let empty = meta::LabelSelector::default();
        assert!(LabelSelector::compile(Some(&empty)).matches(&l));
        let sel = |ml: &[(&str, &str)], ex: Vec<meta::LabelSelectorRequirement>| {
            LabelSelector::compile(Some(&meta::LabelSelector {
                match_labels: Some(labels(ml)),
                match_expressions: Some(ex),
            }))
        };
        let req = |k: &str, op: &str, v: &[&str]| meta::LabelSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect()),
        };
        assert!(sel(&[("app", "web")], vec![]).matches(&l));
        assert!(!sel(&[("app", "db")], vec![]).matches(&l));
        assert!(sel(&[], vec![req("tier", "In", &["front", "back"])]).matches(&l));
        assert!(!sel(&[], vec![req("tier", "NotIn", &["front"])]).matches(&l));
        assert!(sel(&[], vec![req("zone", "NotIn", &["a"])]).matches(&l));
        assert!(sel(&[], vec![req("app", "Exists", &[])]).matches(&l));
        assert!(!sel(&[], vec![req("app", "DoesNotExist", &[])]).matches(&l));
        assert!(!sel(&[], vec![req("app", "Bogus", &[])]).matches(&l));
        assert!(
            !sel(&[], vec![req("app", "In", &[])]).matches(&l),
            "In needs values"
        );
    }

    #[test]
    fn node_selector_operators() {
        let l = labels(&[("zone", "a"), ("cores", "8"), ("gpu", "")]);
        assert!(term(vec![expr("zone", "In", &["a", "b"])]).matches("n1", &l));
        assert!(!term(vec![expr("zone", "In", &["b"])]).matches("n1", &l));
        assert!(term(vec![expr("zone", "NotIn", &["b"])]).matches("n1", &l));
        assert!(term(vec![expr("disk", "NotIn", &["ssd"])]).matches("n1", &l));
        assert!(term(vec![expr("gpu", "Exists", &[])]).matches("n1", &l));
        assert!(term(vec![expr("disk", "DoesNotExist", &[])]).matches("n1", &l));
        assert!(term(vec![expr("cores", "Gt", &["4"])]).matches("n1", &l));
        assert!(!term(vec![expr("cores", "Gt", &["8"])]).matches("n1", &l));
        assert!(term(vec![expr("cores", "Lt", &["9"])]).matches("n1", &l));
        assert!(
            !term(vec![expr("zone", "Lt", &["9"])]).matches("n1", &l),
            "non-integer label"
        );
        assert!(
            !term(vec![expr("cores", "Gt", &["x"])]).matches("n1", &l),
            "invalid value"
        );
        assert!(!term(vec![expr("cores", "Gt", &["1", "2"])]).matches("n1", &l));
        assert!(
            !term(vec![]).matches("n1", &l),
            "an empty term matches nothing"
        );
        // All requirements of a term must hold.
        assert!(!term(vec![
            expr("zone", "In", &["a"]),
            expr("cores", "Lt", &["2"])
        ])
        .matches("n1", &l));
    }

    #[test]
    fn match_fields_on_name_and_terms_are_ored() {
        let field = |op: &str, v: &str| core::NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![expr("metadata.name", op, &[v])]),
        };
        let l = Labels::new();
        assert!(NodeSelectorTerm::compile(&field("In", "n1")).matches("n1", &l));
        assert!(!NodeSelectorTerm::compile(&field("In", "n1")).matches("n2", &l));
        assert!(NodeSelectorTerm::compile(&field("NotIn", "n1")).matches("n2", &l));
        let bad = core::NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![expr("metadata.uid", "In", &["n1"])]),
        };
        assert!(!NodeSelectorTerm::compile(&bad).matches("n1", &l));
        let sel = NodeSelector::compile(&core::NodeSelector {
            node_selector_terms: vec![field("In", "n1"), field("In", "n2")],
        });
        assert!(sel.matches("n1", &l) && sel.matches("n2", &l) && !sel.matches("n3", &l));
        let none = NodeSelector::compile(&core::NodeSelector {
            node_selector_terms: vec![],
        });
        assert!(!none.matches("n1", &l));
    }
}
