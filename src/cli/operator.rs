//! `sluice operator`: the flags of the Kubernetes operator, over the common ones (the
//! configuration file, admin listener, NATS).

use clap::Args;
use std::path::PathBuf;

/// What only the operator takes.
#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// The operator's own namespace (the Lease lives there); by default the pod's
    /// (POD_NAMESPACE), else the kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The namespaces whose RelayPolicies count, comma-separated; default: the operator's
    /// own. Anyone who may create a RelayPolicy in one of them can change the relay's rules.
    #[arg(long, env = "SLUICE_POLICY_NAMESPACES", value_delimiter = ',')]
    pub policy_namespaces: Vec<String>,
    /// Of those, the namespaces that may set mode, trustedNetworks, relayDomains, routes,
    /// limits and retry, and users without allowedSenders; default: the operator's own.
    #[arg(long, env = "SLUICE_PRIVILEGED_NAMESPACES", value_delimiter = ',')]
    pub privileged_namespaces: Vec<String>,
    /// The key (at least 32 bytes) that seals smarthost credentials and webhook keys for
    /// the workers, and salts password hashes. Workers get the same file; ingress pods not.
    #[arg(long, env = "SLUICE_SECRETS_KEY_FILE")]
    pub secrets_key_file: PathBuf,
    /// This replica's name in the Lease and in Events; default: POD_NAME, else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The Lease that elects the replica that writes.
    #[arg(long, env = "SLUICE_LEASE_NAME", default_value = sluice::operator::lease::DEFAULT_NAME)]
    pub lease_name: String,
    /// Write without electing a leader: only for a single replica.
    #[arg(long, env = "SLUICE_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
}
