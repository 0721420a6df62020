//! Taints and tolerations (`k8s.io/api/core/v1/toleration.go` `ToleratesTaint`).

use k8s_openapi::api::core::v1 as core;

/// A taint's effect. Unknown effects are kept so they never match a toleration for a
/// known effect, but they neither block nor score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other,
}

impl Effect {
    fn parse(s: &str) -> Effect {
        match s {
            "NoSchedule" => Effect::NoSchedule,
            "PreferNoSchedule" => Effect::PreferNoSchedule,
            "NoExecute" => Effect::NoExecute,
            _ => Effect::Other,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

impl Taint {
    pub fn from_api(t: &core::Taint) -> Taint {
        Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: Effect::parse(&t.effect),
        }
    }

    /// Whether the taint keeps pods that do not tolerate it off the node.
    pub fn blocks(&self) -> bool {
        matches!(self.effect, Effect::NoSchedule | Effect::NoExecute)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// Empty: every key (only with `Exists`).
    key: String,
    op: TolerationOp,
    value: String,
    /// `None`: every effect.
    effect: Option<Effect>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TolerationOp {
    Exists,
    Equal,
    /// An operator Kubernetes validation would have refused: tolerates nothing.
    Invalid,
}

impl Toleration {
    pub fn from_api(t: &core::Toleration) -> Toleration {
        Toleration {
            key: t.key.clone().unwrap_or_default(),
            op: match t.operator.as_deref() {
                Some("Exists") => TolerationOp::Exists,
                None | Some("") | Some("Equal") => TolerationOp::Equal,
                Some(_) => TolerationOp::Invalid,
            },
            value: t.value.clone().unwrap_or_default(),
            effect: t
                .effect
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(Effect::parse),
        }
    }

    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.op {
            TolerationOp::Exists => true,
            TolerationOp::Equal => self.value == taint.value,
            TolerationOp::Invalid => false,
        }
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint::from_api(&core::Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        })
    }

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration::from_api(&core::Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        })
    }

    #[test]
    fn equal_needs_key_value_and_effect() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tol(Some("dedicated"), None, Some("gpu"), Some("NoSchedule")).tolerates(&t));
        assert!(tol(Some("dedicated"), Some("Equal"), Some("gpu"), None).tolerates(&t));
        assert!(!tol(Some("dedicated"), None, Some("cpu"), None).tolerates(&t));
        assert!(!tol(Some("other"), None, Some("gpu"), None).tolerates(&t));
        assert!(!tol(Some("dedicated"), None, Some("gpu"), Some("NoExecute")).tolerates(&t));
    }

    #[test]
    fn exists_ignores_value_and_empty_key_matches_all() {
        let t = taint("node.kubernetes.io/not-ready", "", "NoExecute");
        assert!(tol(
            Some("node.kubernetes.io/not-ready"),
            Some("Exists"),
            None,
            Some("NoExecute")
        )
        .tolerates(&t));
        assert!(tol(None, Some("Exists"), None, None).tolerates(&t));
        assert!(tol(None, Some("Exists"), None, None).tolerates(&taint("a", "b", "NoSchedule")));
        assert!(!tol(None, Some("Exists"), None, Some("NoSchedule")).tolerates(&t));
        assert!(
            !tol(Some("x"), Some("Bogus"), Some(""), None).tolerates(&taint("x", "", "NoSchedule"))
        );
    }

    #[test]
    fn only_no_schedule_and_no_execute_block() {
        assert!(taint("a", "", "NoSchedule").blocks());
        assert!(taint("a", "", "NoExecute").blocks());
        assert!(!taint("a", "", "PreferNoSchedule").blocks());
        assert!(!taint("a", "", "Weird").blocks());
        let tols = [tol(Some("a"), Some("Exists"), None, None)];
        assert!(tolerated(&tols, &taint("a", "v", "NoSchedule")));
        assert!(!tolerated(&tols, &taint("b", "v", "NoSchedule")));
    }
}
