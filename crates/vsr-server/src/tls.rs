//! Mutual TLS: every connection proves who is at each end.
//!
//! One certificate authority per cluster signs three kinds of certificate, each naming its
//! holder in a DNS subject alternative name under the cluster's own domain:
//!
//! | holder | name | may |
//! |---|---|---|
//! | replica `i` | `replica-i.<cluster>.vsr` | serve, and send replica-to-replica messages as replica `i` |
//! | client `NAME` | `client-NAME.<cluster>.vsr` | send client requests |
//! | operator `NAME` | `operator-NAME.<cluster>.vsr` | send client requests and administrative requests |
//!
//! `<cluster>` is the cluster id in 32 hex digits. A replica's certificate carries both the
//! server and the client extended key usage (it accepts connections and opens them to its
//! peers); a client's or operator's carries only the client usage, so it can never pose as a
//! replica. Whoever connects to replica `i` checks that the certificate presented names
//! replica `i` of this cluster, so an address that points at the wrong replica fails the
//! handshake instead of delivering frames to it.
//!
//! [`TlsTransport`] reads its files from a directory laid out by [`generate`] (`vsr certs`):
//! `ca.pem`, and `<holder>.pem` / `<holder>.key` for the holder it speaks as. Its
//! [`TlsTransport::reload`] re-reads them, so certificates rotate without a restart: new
//! connections use the new files; established ones keep the keys they agreed on.

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::transport::{TcpTransport, Transport, configure, tcp_connect};

/// The certificate authority's certificate, in every holder's directory.
pub const CA_CERTIFICATE: &str = "ca.pem";
/// The certificate authority's private key: needed only to issue certificates; keep it off the
/// replicas' machines.
pub const CA_KEY: &str = "ca.key";
/// Longest holder name (client or operator), so every name fits one DNS label.
pub const NAME_LENGTH_MAX: usize = 48;

/// Who holds a certificate of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Replica `i` of the cluster.
    Replica(u8),
    /// A client: may send client requests only.
    Client(String),
    /// An operator: a client that may also send administrative requests.
    Operator(String),
}

impl Identity {
    /// The stem of this holder's files: `replica-1`, `client-NAME`, `operator-NAME`.
    #[must_use]
    pub fn file_stem(&self) -> String {
        match self {
            Self::Replica(index) => format!("replica-{index}"),
            Self::Client(name) => format!("client-{name}"),
            Self::Operator(name) => format!("operator-{name}"),
        }
    }

    /// The DNS name this holder's certificate carries in cluster `cluster`.
    #[must_use]
    pub fn dns_name(&self, cluster: u128) -> String {
        format!("{}.{}", self.file_stem(), cluster_domain(cluster))
    }

    /// The holder a certificate's DNS name names, if it is of cluster `cluster`.
    #[must_use]
    pub fn from_dns_name(name: &str, cluster: u128) -> Option<Self> {
        let stem = name.strip_suffix(&format!(".{}", cluster_domain(cluster)))?;
        if let Some(index) = stem.strip_prefix("replica-") {
            // Canonical decimal only: `replica-01` names nobody.
            let parsed: u8 = index.parse().ok()?;
            return (parsed.to_string() == index).then_some(Self::Replica(parsed));
        }
        if let Some(name) = stem.strip_prefix("client-") {
            return valid_name(name).then(|| Self::Client(name.to_owned()));
        }
        let name = stem.strip_prefix("operator-")?;
        valid_name(name).then(|| Self::Operator(name.to_owned()))
    }

    /// Whether this holder may send client requests.
    #[must_use]
    pub fn is_client(&self) -> bool {
        matches!(self, Self::Client(_) | Self::Operator(_))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replica(index) => write!(f, "replica {index}"),
            Self::Client(name) => write!(f, "client {name}"),
            Self::Operator(name) => write!(f, "operator {name}"),
        }
    }
}

/// Whether `name` may name a client or an operator: 1 to [`NAME_LENGTH_MAX`] characters of
/// `a-z`, `0-9` and `-`, neither first nor last a `-`.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    (1..=NAME_LENGTH_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn cluster_domain(cluster: u128) -> String {
    format!("{cluster:032x}.vsr")
}

/// What went wrong reading or writing certificates.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file holds no certificate or key in PEM.
    #[error("{path}: {what} (expected PEM, as `vsr certs` writes)")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A certificate does not name the holder it was loaded for.
    #[error(
        "{path} does not name {identity} of cluster {cluster:x} (was it made for another cluster?)"
    )]
    WrongHolder {
        /// The certificate file.
        path: PathBuf,
        /// Who it should name.
        identity: Identity,
        /// The cluster.
        cluster: u128,
    },
    /// rustls refused the certificates or keys.
    #[error("cannot set up TLS from {dir}: {source}")]
    Config {
        /// The directory.
        dir: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// A client certificate verifier could not be built from `ca.pem`.
    #[error("cannot verify clients with {path}: {reason}")]
    Verifier {
        /// The CA certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A name cannot name a client or an operator.
    #[error(
        "bad holder name {0:?}: use 1 to 48 characters of a-z, 0-9 and '-', not starting or ending with '-'"
    )]
    BadName(String),
    /// The directory holds another cluster's certificate authority.
    #[error(
        "{path} is the certificate authority of another cluster: use a new directory for cluster {cluster:x}"
    )]
    OtherCluster {
        /// The CA certificate file.
        path: PathBuf,
        /// The cluster asked for.
        cluster: u128,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What [`generate`] should issue.
#[derive(Clone, Debug)]
pub struct Issue {
    /// The cluster the certificates belong to.
    pub cluster: u128,
    /// Replicas to issue for: `0..replica_count`.
    pub replica_count: u8,
    /// Client names.
    pub clients: Vec<String>,
    /// Operator names.
    pub operators: Vec<String>,
    /// How long the issued certificates are valid.
    pub validity: Duration,
}

/// How long the certificate authority is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates start this long before now, so a slightly slow clock accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Writes the certificates `issue` asks for into `dir` (created if missing), signed by the
/// certificate authority in `dir` if there is one (`ca.pem` and `ca.key` of the same cluster),
/// else by a new one. Existing holder files are replaced (this is how certificates rotate);
/// keys are written readable by their owner only. Returns the files written.
///
/// # Errors
/// When a name is not valid, the directory holds another cluster's authority, or a file cannot
/// be read or written.
pub fn generate(dir: &Path, issue: &Issue) -> Result<Vec<PathBuf>, TlsError> {
    for name in issue.clients.iter().chain(&issue.operators) {
        if !valid_name(name) {
            return Err(TlsError::BadName(name.clone()));
        }
    }
    create_private_dir(dir)?;
    let mut written = Vec::new();
    let ca_path = dir.join(CA_CERTIFICATE);
    let ca_key_path = dir.join(CA_KEY);
    let ca_key = if ca_path.exists() && ca_key_path.exists() {
        let ca = read_certificates(&ca_path)?;
        let names_cluster = ca.first().is_some_and(|certificate| {
            names(certificate).any(|name| name == ca_dns_name(issue.cluster))
        });
        if !names_cluster {
            return Err(TlsError::OtherCluster {
                path: ca_path,
                cluster: issue.cluster,
            });
        }
        let pem = read(&ca_key_path)?;
        KeyPair::from_pem(&String::from_utf8_lossy(&pem)).map_err(|error| TlsError::Pem {
            path: ca_key_path.clone(),
            what: error.to_string(),
        })?
    } else {
        let key = KeyPair::generate()?;
        let certificate = ca_params(issue.cluster)?.self_signed(&key)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&ca_path, certificate.pem().as_bytes(), false)?;
        written.extend([ca_path, ca_key_path]);
        key
    };
    let issuer = Issuer::new(ca_params(issue.cluster)?, ca_key);
    let holders = (0..issue.replica_count)
        .map(Identity::Replica)
        .chain(issue.clients.iter().cloned().map(Identity::Client))
        .chain(issue.operators.iter().cloned().map(Identity::Operator));
    for holder in holders {
        let key = KeyPair::generate()?;
        let certificate = leaf_params(&holder, issue)?.signed_by(&key, &issuer)?;
        let stem = holder.file_stem();
        let key_path = dir.join(format!("{stem}.key"));
        let certificate_path = dir.join(format!("{stem}.pem"));
        write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&certificate_path, certificate.pem().as_bytes(), false)?;
        written.extend([certificate_path, key_path]);
    }
    Ok(written)
}

fn ca_dns_name(cluster: u128) -> String {
    format!("ca.{}", cluster_domain(cluster))
}

/// The authority's parameters: a function of the cluster only, so an authority loaded from
/// its key signs exactly as the one that wrote `ca.pem`.
fn ca_params(cluster: u128) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(vec![ca_dns_name(cluster)])?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("vsr cluster {cluster:032x} CA"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    Ok(params)
}

fn leaf_params(holder: &Identity, issue: &Issue) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(vec![holder.dns_name(issue.cluster)])?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("vsr {holder} of cluster {:032x}", issue.cluster),
    );
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match holder {
        Identity::Replica(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Identity::Client(_) | Identity::Operator(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + issue.validity;
    Ok(params)
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees
/// half a file; `private` files are readable by their owner only.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    let mut file = options.open(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&temporary, path).map_err(io)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            what: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no certificate".to_owned(),
        });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Pem {
        path: path.to_owned(),
        what: error.to_string(),
    })
}

/// The DNS names a certificate presents (unverified: only a verified chain makes them true).
fn names<'a>(certificate: &'a CertificateDer<'a>) -> impl Iterator<Item = &'a str> {
    webpki::EndEntityCert::try_from(certificate)
        .ok()
        .into_iter()
        .flat_map(|parsed| parsed.valid_dns_names().collect::<Vec<_>>())
}

/// The holder a verified certificate names in cluster `cluster`, if exactly one.
fn holder_of(certificate: &CertificateDer<'_>, cluster: u128) -> Option<Identity> {
    let mut holders = names(certificate).filter_map(|name| Identity::from_dns_name(name, cluster));
    let holder = holders.next()?;
    holders.next().is_none().then_some(holder)
}

/// Mutual TLS over TCP (with the socket options of [`TcpTransport`](crate::TcpTransport)), TLS 1.3 only, with aws-lc-rs as the crypto provider.
/// Cheap to clone: clones share the loaded configuration, and [`TlsTransport::reload`] on any
/// of them reloads it for all.
#[derive(Clone)]
pub struct TlsTransport {
    shared: Arc<Shared>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("dir", &self.shared.dir)
            .field("identity", &self.shared.identity)
            .finish_non_exhaustive()
    }
}

struct Shared {
    dir: PathBuf,
    cluster: u128,
    identity: Identity,
    configs: RwLock<Configs>,
}

#[derive(Clone)]
struct Configs {
    /// For accepting: replicas only.
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

impl TlsTransport {
    /// Speaks as `identity` of cluster `cluster`, with `ca.pem` and `identity`'s certificate
    /// and key from `dir`.
    ///
    /// # Errors
    /// When a file is missing or malformed, or the certificate does not name `identity` of
    /// this cluster.
    pub fn new(dir: &Path, cluster: u128, identity: Identity) -> Result<Self, TlsError> {
        let configs = load(dir, cluster, &identity)?;
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                cluster,
                identity,
                configs: RwLock::new(configs),
            }),
        })
    }

    /// The holder this transport speaks as.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    /// Re-reads the files. On an error the configuration in use stays as it was.
    ///
    /// # Errors
    /// As [`TlsTransport::new`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let shared = &self.shared;
        let configs = load(&shared.dir, shared.cluster, &shared.identity)?;
        *shared
            .configs
            .write()
            .unwrap_or_else(PoisonError::into_inner) = configs;
        Ok(())
    }

    fn configs(&self) -> Configs {
        self.shared
            .configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn load(dir: &Path, cluster: u128, identity: &Identity) -> Result<Configs, TlsError> {
    let ca_path = dir.join(CA_CERTIFICATE);
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(&ca_path)? {
        roots.add(certificate).map_err(|source| TlsError::Config {
            dir: dir.to_owned(),
            source,
        })?;
    }
    let roots = Arc::new(roots);
    let stem = identity.file_stem();
    let certificate_path = dir.join(format!("{stem}.pem"));
    let chain = read_certificates(&certificate_path)?;
    let key = read_key(&dir.join(format!("{stem}.key")))?;
    if holder_of(&chain[0], cluster).as_ref() != Some(identity) {
        return Err(TlsError::WrongHolder {
            path: certificate_path,
            identity: identity.clone(),
            cluster,
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config_error = |source| TlsError::Config {
        dir: dir.to_owned(),
        source,
    };
    let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(Arc::clone(&roots))
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(config_error)?;
    let server = if matches!(identity, Identity::Replica(_)) {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|error| TlsError::Verifier {
                    path: ca_path.clone(),
                    reason: error.to_string(),
                })?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(config_error)?;
        Some(Arc::new(server))
    } else {
        None
    };
    Ok(Configs {
        server,
        client: Arc::new(client),
    })
}

impl Transport for TlsTransport {
    type Stream = TlsStream<TcpStream>;
    type Incoming = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, address: SocketAddr) -> io::Result<TcpListener> {
        TcpTransport.bind(address).await
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        TcpTransport.accept(listener).await
    }

    async fn handshake(&self, incoming: TcpStream) -> io::Result<(Self::Stream, Option<Identity>)> {
        configure(&incoming)?;
        let Some(server) = self.configs().server else {
            return Err(io::Error::other(
                "only a replica's certificate can accept connections",
            ));
        };
        let stream = TlsAcceptor::from(server).accept(incoming).await?;
        let (_, connection) = stream.get_ref();
        let holder = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|certificate| holder_of(certificate, self.shared.cluster))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the peer's certificate names no holder of this cluster",
                )
            })?;
        Ok((TlsStream::Server(stream), Some(holder)))
    }

    async fn connect(&self, address: &str, replica: u8) -> io::Result<Self::Stream> {
        let stream = tcp_connect(address).await?;
        let name = ServerName::try_from(Identity::Replica(replica).dns_name(self.shared.cluster))
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let stream = TlsConnector::from(self.configs().client)
            .connect(name, stream)
            .await?;
        Ok(TlsStream::Client(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u128 = 0xfeed;

    fn issue(replica_count: u8) -> Issue {
        Issue {
            cluster: CLUSTER,
            replica_count,
            clients: vec!["alice".to_owned()],
            operators: vec!["root".to_owned()],
            validity: Duration::from_secs(24 * 3600),
        }
    }

    #[test]
    fn names_round_trip_and_reject_other_clusters_and_odd_forms() {
        for identity in [
            Identity::Replica(0),
            Identity::Replica(6),
            Identity::Client("a-1".to_owned()),
            Identity::Operator("root".to_owned()),
        ] {
            let name = identity.dns_name(CLUSTER);
            assert_eq!(Identity::from_dns_name(&name, CLUSTER), Some(identity));
            assert_eq!(Identity::from_dns_name(&name, CLUSTER + 1), None);
        }
        let domain = cluster_domain(CLUSTER);
        for bad in [
            "replica-01",
            "replica-256",
            "replica-",
            "client-",
            "client--x",
            "admin-x",
        ] {
            assert_eq!(
                Identity::from_dns_name(&format!("{bad}.{domain}"), CLUSTER),
                None,
                "{bad}"
            );
        }
        assert!(!valid_name("UPPER") && !valid_name(&"x".repeat(49)) && !valid_name("a.b"));
    }

    #[test]
    fn generate_writes_every_holder_and_reuses_its_authority() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path(), &issue(3)).unwrap();
        assert_eq!(written.len(), 2 + 2 * 5);
        let ca = fs::read(dir.path().join(CA_CERTIFICATE)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("replica-0.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Issuing again keeps the authority: old and new certificates verify alike.
        let again = generate(dir.path(), &issue(3)).unwrap();
        assert_eq!(again.len(), 2 * 5);
        assert_eq!(fs::read(dir.path().join(CA_CERTIFICATE)).unwrap(), ca);
        for identity in [
            Identity::Replica(2),
            Identity::Client("alice".to_owned()),
            Identity::Operator("root".to_owned()),
        ] {
            TlsTransport::new(dir.path(), CLUSTER, identity).unwrap();
        }
        let other = Issue {
            cluster: CLUSTER + 1,
            ..issue(3)
        };
        assert!(matches!(
            generate(dir.path(), &other),
            Err(TlsError::OtherCluster { .. })
        ));
        let bad = Issue {
            clients: vec!["Bad Name".to_owned()],
            ..issue(3)
        };
        assert!(matches!(
            generate(dir.path(), &bad),
            Err(TlsError::BadName(_))
        ));
    }

    #[test]
    fn a_certificate_loaded_for_another_holder_or_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &issue(3)).unwrap();
        fs::copy(
            dir.path().join("replica-1.pem"),
            dir.path().join("replica-0.pem"),
        )
        .unwrap();
        fs::copy(
            dir.path().join("replica-1.key"),
            dir.path().join("replica-0.key"),
        )
        .unwrap();
        assert!(matches!(
            TlsTransport::new(dir.path(), CLUSTER, Identity::Replica(0)),
            Err(TlsError::WrongHolder { .. })
        ));
        assert!(matches!(
            TlsTransport::new(dir.path(), CLUSTER + 1, Identity::Replica(1)),
            Err(TlsError::WrongHolder { .. })
        ));
        assert!(matches!(
            TlsTransport::new(dir.path(), CLUSTER, Identity::Replica(5)),
            Err(TlsError::Io { .. })
        ));
        fs::write(dir.path().join("client-alice.pem"), b"garbage").unwrap();
        assert!(matches!(
            TlsTransport::new(dir.path(), CLUSTER, Identity::Client("alice".to_owned())),
            Err(TlsError::Pem { .. })
        ));
    }
}
