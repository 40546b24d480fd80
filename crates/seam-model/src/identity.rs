//! Who is asking: the identities the controller authorizes, and how a certificate names them.
//!
//! Certificates follow Kubernetes' convention for node client certificates: the subject's
//! organization (O) names the group and its common name (CN) names the member. A node's
//! certificate also carries the node's name as a DNS SAN and its identity epoch in the
//! subject's organizational unit (OU), so the controller can make every certificate issued
//! before a revocation useless without keeping a list of serial numbers.

use std::fmt;

/// The organization (O) of a node's certificate.
pub const NODES_GROUP: &str = "seam:nodes";
/// The organization (O) of the Kubernetes adapter's certificate.
pub const ADAPTER_GROUP: &str = "seam:adapter";
/// The organization (O) of an administrator's certificate.
pub const ADMINS_GROUP: &str = "seam:admins";
/// The organization (O) of a read-only user's certificate.
pub const READERS_GROUP: &str = "seam:readers";
/// The organization (O) of a controller replica's serving certificate (never a client).
pub const CONTROLLERS_GROUP: &str = "seam:controllers";
/// The prefix of a node certificate's OU that carries its identity epoch (`epoch:3`).
pub const EPOCH_PREFIX: &str = "epoch:";

/// What a caller may do, by the group its certificate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A node's agent: reads what it needs, writes only its own objects.
    Node,
    /// The Kubernetes adapter: writes what it translates from Kubernetes.
    Adapter,
    /// An administrator: everything.
    Admin,
    /// A read-only user: reads and `explain`.
    Reader,
}

impl Role {
    /// The certificate organization (O) that names this role.
    pub fn group(self) -> &'static str {
        match self {
            Role::Node => NODES_GROUP,
            Role::Adapter => ADAPTER_GROUP,
            Role::Admin => ADMINS_GROUP,
            Role::Reader => READERS_GROUP,
        }
    }

    /// The role a certificate organization names, if any.
    pub fn from_group(group: &str) -> Option<Role> {
        [Role::Node, Role::Adapter, Role::Admin, Role::Reader]
            .into_iter()
            .find(|r| r.group() == group)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Adapter => "adapter",
            Role::Admin => "admin",
            Role::Reader => "reader",
        })
    }
}

/// An authenticated caller: a role and a name (the node's name for [`Role::Node`], the user's
/// or component's name otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// What the caller may do.
    pub role: Role,
    /// Who the caller is.
    pub name: String,
    /// For a node: the identity epoch its certificate was issued in (0 for other roles).
    pub epoch: u64,
}

/// The name given to a caller on the controller's local Unix socket (root on the node).
pub const LOCAL_ADMIN: &str = "local-root";

impl Identity {
    /// Root on the controller's machine, over the mode-0600 Unix socket.
    pub fn local_admin() -> Identity {
        Identity {
            role: Role::Admin,
            name: LOCAL_ADMIN.to_string(),
            epoch: 0,
        }
    }

    /// A node's identity in `epoch`.
    pub fn node(name: impl Into<String>, epoch: u64) -> Identity {
        Identity {
            role: Role::Node,
            name: name.into(),
            epoch,
        }
    }

    /// A caller of another role (epoch 0).
    pub fn of(role: Role, name: impl Into<String>) -> Identity {
        Identity {
            role,
            name: name.into(),
            epoch: 0,
        }
    }

    /// The OU a node certificate of this identity carries (`epoch:N`).
    pub fn epoch_unit(&self) -> String {
        format!("{EPOCH_PREFIX}{}", self.epoch)
    }
}

impl fmt::Display for Identity {
    /// `node/n1`, `admin/alice`: how logs and the audit log name a caller.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

/// Reads an `epoch:N` organizational unit.
pub fn parse_epoch_unit(unit: &str) -> Option<u64> {
    unit.strip_prefix(EPOCH_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip() {
        for role in [Role::Node, Role::Adapter, Role::Admin, Role::Reader] {
            assert_eq!(Role::from_group(role.group()), Some(role));
        }
        assert_eq!(Role::from_group(CONTROLLERS_GROUP), None);
        assert_eq!(Role::from_group("system:masters"), None);
    }

    #[test]
    fn epochs_read_back() {
        let id = Identity::node("n1", 7);
        assert_eq!(parse_epoch_unit(&id.epoch_unit()), Some(7));
        assert_eq!(parse_epoch_unit("epoch:x"), None);
        assert_eq!(parse_epoch_unit("7"), None);
        assert_eq!(id.to_string(), "node/n1");
    }
}
