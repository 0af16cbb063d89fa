use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sigil_signer::admin;
use sigil_signer::app::App;
use sigil_signer::backend::local::LocalKeyConfig;
use sigil_signer::config::SignerConfig;
use sigil_signer::interchange;
use sigil_signer::keys::cometbft;
use sigil_signer::keys::tezos;
use sigil_signer::keys::{Algorithm, PublicKey, SecretKey};
use sigil_signer::protocol::atto::model as atto;
use sigil_signer::protocol::cometbft::state_file::StateFormat;
use sigil_signer::ratchet::file::FileRatchet;
use sigil_signer::ratchet::{Mark, StreamId};
use zeroize::Zeroizing;

/// A remote signer for validators: keys stay here, the node asks for signatures.
///
/// With no arguments, sigil-signer is a drop-in for attocash/signer and reads the same
/// ATTO_SIGNER_* environment variables. With --config it serves what the YAML file describes.
#[derive(Parser)]
#[command(version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// Serve what this YAML file describes instead of the ATTO_SIGNER_* variables.
    #[arg(long, short, env = "SIGIL_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `sigil_signer=debug`.
    #[arg(long, env = "SIGIL_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

const AFTER_HELP: &str = "\
Examples:
  ATTO_SIGNER_BACKEND=LOCAL ATTO_SIGNER_KEY=<64 hex> ATTO_SIGNER_TOKEN=<token> \\
  ATTO_SIGNER_CAPABILITIES=CHALLENGE,VOTE sigil-signer
  sigil-signer --config signer.yaml
  sigil-signer key generate --algorithm ed25519 --out voter.key
  sigil-signer key show --file voter.key
  echo edsk... | sigil-signer key import --out baker.key

Docs: docs/atto.md, docs/tezos.md, docs/configuration.md";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured APIs (the default).
    Run,
    /// Create, import and inspect keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Work with the high-water marks in the configured ratchet store (stop the signer first when
    /// the store is a file).
    #[command(subcommand)]
    Ratchet(Box<RatchetCommand>),
}

#[derive(Subcommand)]
enum RatchetCommand {
    /// List every stored mark.
    Show,
    /// Set one stream's mark. Raising is always allowed; lowering needs --force.
    Set {
        #[command(flatten)]
        stream: StreamArgs,
        #[arg(long)]
        level: u64,
        #[arg(long, default_value_t = 0)]
        round: u64,
        /// CometBFT: 1 proposal, 2 prevote, 3 precommit. Tezos: 0.
        #[arg(long, default_value_t = 0)]
        step: u8,
        /// Lower a mark. Dangerous: the signer may then sign again positions it has already signed,
        /// which is a double sign if it did. Only after you are sure the key never signed above.
        #[arg(long)]
        force: bool,
    },
    /// Set up the configured ConfigMap as a marks store on purpose (creating it empty if missing):
    /// running signers refuse a store nobody initialised, since an empty or copied store would
    /// let them sign again what they signed before. A validator that signed before must then
    /// import its marks (`ratchet import`, which also initialises).
    Init,
    /// Start marks where the previous signer left off, never lowering one: a marks interchange
    /// document (`ratchet export`), CometBFT's priv_validator_state.json, a tmkms state file, a
    /// Signatory watermark file, or another sigil ratchet directory.
    Import {
        /// The key, as named in the config (not with --interchange, which names its keys).
        #[arg(long, required_unless_present = "interchange", conflicts_with = "interchange")]
        key: Option<String>,
        /// The chain id: one of the key's cometbft[].chainId, or a Tezos chain id (Net…) the key
        /// may sign on (not with --interchange).
        #[arg(long, required_unless_present = "interchange", conflicts_with = "interchange")]
        chain: Option<String>,
        #[command(flatten)]
        from: ImportSource,
        /// Print what would change, write nothing.
        #[arg(long, requires = "interchange")]
        dry_run: bool,
    },
    /// Print every mark of the store as a marks interchange document (JSON), its keys named as
    /// their chains name them (tz1…, a validator address).
    Export,
    /// Print another signer's marks as a marks interchange document, for `ratchet import
    /// --interchange` (needs no --config).
    Convert {
        #[command(flatten)]
        from: ConvertSource,
        /// The chain id, for sources that do not name it (Tezio, tmkms, CometBFT, Horcrux) or to
        /// override a Signatory file's name.
        #[arg(long)]
        chain: Option<String>,
        /// The key, for sources that do not name it: its tz… hash (Tezio) or validator address
        /// (tmkms, CometBFT, Horcrux; `sigil-signer key show` prints it).
        #[arg(long)]
        key_hash: Option<String>,
        /// The cutover check: instead of printing, compare with the document exported before
        /// (FILE) and fail, naming each stream, if the old signer signed anything after it.
        #[arg(long, value_name = "FILE")]
        unchanged_since: Option<PathBuf>,
    },
}

#[derive(Args)]
struct StreamArgs {
    #[arg(long)]
    key: String,
    #[arg(long)]
    chain: String,
    /// block, preattestation, attestation (Tezos), consensus (CometBFT).
    #[arg(long)]
    stream: String,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ConvertSource {
    /// octez-signer's base directory: its *_high_watermarks files.
    #[arg(long, value_name = "DIR")]
    from_octez: Option<PathBuf>,
    /// Signatory's <base_dir>/watermark_v2/<chain>.json.
    #[arg(long, value_name = "FILE")]
    from_signatory: Option<PathBuf>,
    /// Signatory's DynamoDB watermark table, as `aws dynamodb scan --table-name watermark` prints it.
    #[arg(long, value_name = "FILE")]
    from_signatory_dynamodb: Option<PathBuf>,
    /// Signatory's Firestore watermarks: a JSON array of {path, lvl, round}.
    #[arg(long, value_name = "FILE")]
    from_signatory_firestore: Option<PathBuf>,
    /// tacoinfra remote-signer's DynamoDB ratchet table, as `aws dynamodb scan` prints it.
    #[arg(long, value_name = "FILE")]
    from_tacoinfra: Option<PathBuf>,
    /// The Tezio signer's config.yaml (high_water_marks); needs --chain and --key-hash.
    #[arg(long, value_name = "FILE")]
    from_tezio: Option<PathBuf>,
    /// A tmkms consensus state file; needs --chain and --key-hash.
    #[arg(long, value_name = "FILE")]
    from_tmkms: Option<PathBuf>,
    /// CometBFT's data/priv_validator_state.json; needs --chain and --key-hash.
    #[arg(long, value_name = "FILE")]
    from_cometbft: Option<PathBuf>,
    /// Horcrux's <chain-id>_priv_validator_state.json; needs --key-hash (--chain unless the file is
    /// named after it).
    #[arg(long, value_name = "FILE")]
    from_horcrux: Option<PathBuf>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ImportSource {
    /// A marks interchange document (docs/ratchet.md), e.g. from `ratchet export` or a converter:
    /// every key and chain in it, checked whole against the config before anything is written.
    #[arg(long, value_name = "FILE")]
    interchange: Option<PathBuf>,
    /// CometBFT's data/priv_validator_state.json.
    #[arg(long, value_name = "FILE")]
    from_cometbft: Option<PathBuf>,
    /// A tmkms state file (state_file in tmkms.toml).
    #[arg(long, value_name = "FILE")]
    from_tmkms: Option<PathBuf>,
    /// Signatory's <base_dir>/watermark_v2/<chain>.json (the key's own tz address is looked up).
    #[arg(long, value_name = "FILE")]
    from_signatory: Option<PathBuf>,
    /// Another sigil file ratchet directory (ratchet.file.dir), e.g. when moving to a ConfigMap.
    #[arg(long, value_name = "DIR")]
    from_sigil_dir: Option<PathBuf>,
    /// Another sigil marks ConfigMap in the configured ratchet's namespace, e.g. the store of a
    /// renamed RemoteSigner (`<old name>-ratchet`).
    #[arg(long, value_name = "NAME")]
    from_sigil_configmap: Option<String>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Generate a new secret key and write it to a file readable by you alone.
    Generate {
        #[arg(long, short, value_enum, default_value_t = AlgorithmArg::Ed25519)]
        algorithm: AlgorithmArg,
        /// Where to write the secret (64 hex characters, or `BLsk…` for bls12-381; mode 600, never
        /// overwritten); `-` for stdout.
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
    },
    /// Read a secret key from standard input (64 hex characters, or a Tezos edsk…/spsk…/p2sk…/BLsk…
    /// key), check it, and write it to a file as hex (a BLS key as `BLsk…`).
    Import {
        #[arg(long, short, value_enum, default_value_t = AlgorithmArg::Ed25519)]
        algorithm: AlgorithmArg,
        /// Where to write the secret (mode 600, never overwritten).
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a key's public key and the chain addresses it has.
    Show(ShowArgs),
}

#[derive(Args)]
struct ShowArgs {
    /// A secret key file (64 hex characters or a Tezos edsk…/spsk…/p2sk…/BLsk… key). Without --file or
    /// --key, the secret is read from stdin.
    #[arg(long, short, value_name = "FILE", conflicts_with = "key")]
    file: Option<PathBuf>,
    /// A key named in the --config file.
    #[arg(long, short, value_name = "NAME")]
    key: Option<String>,
    #[arg(long, short, value_enum, default_value_t = AlgorithmArg::Ed25519)]
    algorithm: AlgorithmArg,
    /// Also print the Cosmos SDK consensus forms with this bech32 prefix (e.g. `cosmos`).
    #[arg(long, value_name = "PREFIX")]
    bech32_prefix: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    Ed25519,
    Secp256k1,
    P256,
    // Tezos tz4 (BLS12-381 min-pk); written as a `BLsk…` key.
    #[value(name = "bls12-381")]
    Bls12_381,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Self {
        match arg {
            AlgorithmArg::Ed25519 => Algorithm::Ed25519,
            AlgorithmArg::Secp256k1 => Algorithm::Secp256k1,
            AlgorithmArg::P256 => Algorithm::P256,
            AlgorithmArg::Bls12_381 => Algorithm::Bls12_381,
        }
    }
}

fn main() {
    sigil_signer::install_crypto_provider();
    let cli = Cli::parse();
    sigil_signer::process::init_logging(&cli.log, cli.log_format == LogFormat::Json);
    if let Err(error) = dispatch(cli) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cli.config.as_deref()),
        Command::Key(KeyCommand::Generate { algorithm, out }) => {
            let key = SecretKey::generate(algorithm.into());
            write_secret(&out, &key)?;
            print_public(&key.public_key(), None, out.as_os_str() == "-")
        }
        Command::Key(KeyCommand::Import { algorithm, out }) => {
            let key = read_secret_stdin(algorithm.into())?;
            write_secret(&out, &key)?;
            print_public(&key.public_key(), None, false)
        }
        Command::Ratchet(command) => ratchet_command(cli.config.as_deref(), *command),
        Command::Key(KeyCommand::Show(args)) => {
            print_public(&show(&args, cli.config.as_deref())?, args.bech32_prefix.as_deref(), false)
        }
    }
}

fn run(config: Option<&Path>) -> Result<()> {
    let config = match config {
        Some(path) => SignerConfig::from_file(path)?,
        None => SignerConfig::from_atto_env(|name| std::env::var(name).ok())?,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = App::start(&config).await?;
        app.run(sigil_signer::process::shutdown_signal()).await;
        Ok(())
    })
}

fn ratchet_command(config: Option<&Path>, command: RatchetCommand) -> Result<()> {
    if let RatchetCommand::Convert { from, chain, key_hash, unchanged_since } = command {
        let document = convert(from, chain, key_hash)?;
        let Some(exported) = unchanged_since else {
            println!("{}", serde_json::to_string_pretty(&document)?);
            return Ok(());
        };
        let text = admin::read(&exported)?;
        let exported_document = interchange::parse(&text).with_context(|| exported.display().to_string())?;
        let moved = interchange::moved_since(&exported_document, &document);
        if !moved.is_empty() {
            bail!(
                "the old signer signed after {} was exported; it is still running, or was started again. Stop it \
                 for good, then export again:\n{}",
                exported.display(),
                moved.join("\n")
            );
        }
        println!("unchanged since {}: the old signer signed nothing after it", exported.display());
        return Ok(());
    }
    let Some(config_path) = config else {
        bail!("ratchet commands work on the --config file's ratchet; pass --config FILE")
    };
    let config = SignerConfig::from_file(config_path)?;
    if let RatchetCommand::Import { key: Some(key), chain: Some(chain), .. } = &command {
        // Before the store is opened: marks under a chain nobody signs for protect nothing.
        admin::check_chain(&config, key, chain)
            .with_context(|| format!("ratchet import: nothing written (config {})", config_path.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // An interchange document is checked whole, against the config, before the store opens.
        let wanted = match &command {
            RatchetCommand::Import { from: ImportSource { interchange: Some(path), .. }, .. } => {
                let text = admin::read(path)?;
                let document =
                    interchange::parse(&text).with_context(|| format!("{}: nothing written", path.display()))?;
                let wanted = interchange::wanted(&document, &known_keys(&config).await?);
                Some(wanted.with_context(|| format!("{}: nothing written", path.display()))?)
            }
            _ => None,
        };
        let ratchet = admin::open(&config).await?;
        match command {
            RatchetCommand::Show => {
                for entry in admin::show(&*ratchet).await? {
                    let signed = if entry.state.signature.is_some() { "signature kept" } else { "no signature" };
                    println!("{} {} {}: {} ({signed})", entry.key, entry.chain, entry.stream, entry.state.mark);
                }
            }
            RatchetCommand::Set { stream, level, round, step, force } => {
                let id = StreamId { key: stream.key, chain: stream.chain, stream: admin::stream_name(&stream.stream)? };
                let outcome = admin::set(&*ratchet, &id, Mark { level, round, step }, force).await?;
                if let admin::MarkChange::Lowered { .. } = outcome {
                    eprintln!(
                        "WARNING: a lowered mark lets this key sign positions it may already have signed. \
                         If it did, that is a double sign."
                    );
                }
                println!("{outcome}");
            }
            RatchetCommand::Export => {
                let keys = known_keys(&config).await?;
                let hashes = keys.into_iter().map(|k| (k.name, k.key_hash)).collect();
                let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
                let exporter = concat!("sigil-signer ", env!("CARGO_PKG_VERSION"));
                let document = interchange::export(&admin::show(&*ratchet).await?, &hashes, exporter, &now);
                println!("{}", serde_json::to_string_pretty(&document)?);
            }
            RatchetCommand::Import { from: ImportSource { interchange: Some(_), .. }, dry_run, .. } => {
                let changes = interchange::plan(&*ratchet, wanted.unwrap_or_default()).await?;
                for change in &changes {
                    println!("{}{change}", if dry_run { "would be: " } else { "" });
                }
                if dry_run {
                    return Ok(());
                }
                interchange::apply(&*ratchet, &changes).await?;
                if let Some(sealed) = ratchet.seal().await? {
                    println!("{sealed}");
                }
            }
            RatchetCommand::Import { key: Some(key), chain: Some(chain), from, .. } => {
                let text;
                let pkh;
                let source = match from {
                    ImportSource { from_cometbft: Some(path), .. } => {
                        text = admin::read(&path)?;
                        admin::Source::CometBft(&text, StateFormat::CometBft)
                    }
                    ImportSource { from_tmkms: Some(path), .. } => {
                        text = admin::read(&path)?;
                        admin::Source::CometBft(&text, StateFormat::Tmkms)
                    }
                    ImportSource { from_signatory: Some(path), .. } => {
                        text = admin::read(&path)?;
                        pkh = tezos::pkh(&configured_public_key(&config, &key).await?);
                        admin::Source::Signatory { text: &text, pkh: &pkh }
                    }
                    ImportSource { from_sigil_dir: Some(dir), .. } => {
                        admin::Source::Sigil(admin::show(&FileRatchet::open(&dir)?).await?)
                    }
                    ImportSource { from_sigil_configmap: Some(name), .. } => {
                        admin::Source::Sigil(admin::show(&*admin::open_config_map(&config, &name).await?).await?)
                    }
                    _ => bail!("name one source to import from"),
                };
                for outcome in admin::import(&*ratchet, &key, &chain, admin::marks(source, &key, &chain)?).await? {
                    println!("{outcome}");
                }
                // An import is a deliberate start: the store is now set up on purpose.
                if let Some(sealed) = ratchet.seal().await? {
                    println!("{sealed}");
                }
            }
            RatchetCommand::Import { .. } => bail!("ratchet import needs --key and --chain, or --interchange FILE"),
            RatchetCommand::Convert { .. } => unreachable!("converted above"),
            RatchetCommand::Init => match ratchet.seal().await {
                Ok(Some(sealed)) => println!("{sealed}"),
                Ok(None) => println!("nothing to do: the store is already set up (or, for files, needs no setup)"),
                Err(error) => return Err(error.into()),
            },
        }
        Ok(())
    })
}

/// Another signer's marks as an interchange document.
fn convert(from: ConvertSource, chain: Option<String>, key_hash: Option<String>) -> Result<interchange::Document> {
    use interchange::convert;
    let mut marks = convert::Marks::default();
    // A file named after its chain (Signatory's <chain>.json, Horcrux's <chain>_priv_validator_state.json).
    let chain_of = |path: &Path, suffix: &str| -> Result<String> {
        let named = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(suffix)).map(str::to_string);
        chain.clone().or(named).with_context(|| format!("{}: pass --chain", path.display()))
    };
    let needs = |what: &str| -> Result<(String, String)> {
        let chain = chain.clone().with_context(|| format!("{what} does not name its chain: pass --chain"))?;
        let key = key_hash.clone().with_context(|| format!("{what} does not name its key: pass --key-hash"))?;
        Ok((chain, key))
    };
    let source = match &from {
        ConvertSource { from_octez: Some(dir), .. } => {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                if name.ends_with("_high_watermarks") {
                    files.push((name, admin::read(&path)?));
                }
            }
            files.sort();
            convert::octez(&files, &mut marks)?;
            "octez-signer"
        }
        ConvertSource { from_signatory: Some(path), .. } => {
            convert::signatory_file(&chain_of(path, ".json")?, &admin::read(path)?, &mut marks)?;
            "Signatory (file)"
        }
        ConvertSource { from_signatory_dynamodb: Some(path), .. } => {
            convert::signatory_dynamodb(&admin::read(path)?, &mut marks)?;
            "Signatory (DynamoDB)"
        }
        ConvertSource { from_signatory_firestore: Some(path), .. } => {
            convert::signatory_firestore(&admin::read(path)?, &mut marks)?;
            "Signatory (Firestore)"
        }
        ConvertSource { from_tacoinfra: Some(path), .. } => {
            convert::tacoinfra(&admin::read(path)?, &mut marks)?;
            "tacoinfra remote-signer (DynamoDB)"
        }
        ConvertSource { from_tezio: Some(path), .. } => {
            let (chain, key) = needs("a Tezio config")?;
            convert::tezio(&admin::read(path)?, &chain, &key, &mut marks)?;
            "Tezio signer"
        }
        ConvertSource { from_tmkms: Some(path), .. } => {
            let (chain, key) = needs("a tmkms state file")?;
            convert::cometbft_state(&admin::read(path)?, StateFormat::Tmkms, &chain, &key, &mut marks)?;
            "tmkms"
        }
        ConvertSource { from_cometbft: Some(path), .. } => {
            let (chain, key) = needs("priv_validator_state.json")?;
            convert::cometbft_state(&admin::read(path)?, StateFormat::CometBft, &chain, &key, &mut marks)?;
            "CometBFT"
        }
        ConvertSource { from_horcrux: Some(path), .. } => {
            let chain = chain_of(path, "_priv_validator_state.json")?;
            let key = key_hash.clone().context("a Horcrux state file does not name its key: pass --key-hash")?;
            convert::cometbft_state(&admin::read(path)?, StateFormat::CometBft, &chain, &key, &mut marks)?;
            "Horcrux"
        }
        _ => bail!("name one source to convert"),
    };
    Ok(marks.document(&format!("sigil-signer {} ratchet convert from {source}", env!("CARGO_PKG_VERSION")))?)
}

/// Every configured key that keeps marks, as an interchange document names it: its hash on its
/// chain (asked of its backend), its curve, protocol and chains.
async fn known_keys(config: &SignerConfig) -> Result<Vec<interchange::KnownKey>> {
    let mut known = Vec::new();
    for name in config.keys.keys() {
        let cometbft: Vec<String> =
            config.cometbft.iter().filter(|v| &v.key == name).map(|v| v.chain_id.clone()).collect();
        let tezos = config.tezos.as_ref().and_then(|t| t.keys.get(name));
        let (protocol, chains) = match (tezos, cometbft.is_empty()) {
            (Some(policy), _) => {
                (interchange::Protocol::Tezos, (!policy.chains.is_empty()).then(|| policy.chains.clone()))
            }
            (None, false) => (interchange::Protocol::Cometbft, Some(cometbft)),
            (None, true) => continue,
        };
        let public_key = configured_public_key(config, name).await.with_context(|| format!("key {name}"))?;
        let key_hash = match protocol {
            interchange::Protocol::Tezos => tezos::pkh(&public_key),
            interchange::Protocol::Cometbft => {
                cometbft::address(&public_key).map(hex::encode_upper).unwrap_or_else(|| public_key.id())
            }
        };
        known.push(interchange::KnownKey {
            name: name.clone(),
            key_hash,
            algorithm: public_key.algorithm(),
            protocol,
            chains,
        });
    }
    Ok(known)
}

/// The public key of a configured key, asked of its backend.
async fn configured_public_key(config: &SignerConfig, name: &str) -> Result<PublicKey> {
    let Some(key) = config.keys.get(name) else { bail!("no key named {name:?}") };
    Ok(sigil_signer::app::open_backend(name, key)?.public_key().await?)
}

fn read_secret_stdin(algorithm: Algorithm) -> Result<SecretKey> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin().take(4096).read_to_string(&mut text).context("cannot read the secret key from stdin")?;
    parse_secret(algorithm, &text)
}

/// 64 hex characters of `algorithm`, or a key file that names its own curve (Tezos `edsk…`,
/// CometBFT `priv_validator_key.json`, tmkms base64).
fn parse_secret(algorithm: Algorithm, text: &str) -> Result<SecretKey> {
    let config = LocalKeyConfig {
        secret_key: Some(text.to_string()),
        algorithm: (!tezos::is_secret_key_text(text) && !cometbft::is_key_text(text)).then_some(algorithm),
        ..Default::default()
    };
    Ok(config.load()?.0)
}

fn write_secret(out: &Path, key: &SecretKey) -> Result<()> {
    // A BLS scalar in hex would not say its byte order; its Tezos form does.
    let text = match key.algorithm() {
        Algorithm::Bls12_381 => Zeroizing::new(format!("{}\n", *tezos::secret_key_b58(key))),
        _ => Zeroizing::new(format!("{}\n", hex::encode(*key.to_bytes()))),
    };
    if out.as_os_str() == "-" {
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(out).with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    eprintln!("wrote {} secret key to {}", key.algorithm(), out.display());
    Ok(())
}

fn show(args: &ShowArgs, config: Option<&Path>) -> Result<PublicKey> {
    if let Some(name) = &args.key {
        let Some(path) = config else { bail!("--key names a key in the --config file; pass --config FILE") };
        let config = SignerConfig::from_file(path)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(configured_public_key(&config, name));
    }
    let algorithm = args.algorithm.into();
    let key = match &args.file {
        Some(path) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            );
            parse_secret(algorithm, &text).with_context(|| format!("{}", path.display()))?
        }
        None => read_secret_stdin(algorithm)?,
    };
    Ok(key.public_key())
}

/// Public facts only; goes to stderr when stdout carries the secret.
fn print_public(public_key: &PublicKey, bech32_prefix: Option<&str>, to_stderr: bool) -> Result<()> {
    let mut lines = vec![
        format!("algorithm:  {}", public_key.algorithm()),
        format!("public key: {}", hex::encode_upper(public_key.as_bytes())),
    ];
    if let (Algorithm::Ed25519, Ok(ed25519)) = (public_key.algorithm(), <[u8; 32]>::try_from(public_key.as_bytes())) {
        lines.push(format!("atto:       {}", atto::address(&ed25519)));
    }
    lines.push(format!("tezos:      {} ({})", tezos::pkh(public_key), tezos::public_key_b58(public_key)));
    if let Some(address) = cometbft::address(public_key) {
        lines.push(format!("cometbft:   {}", hex::encode_upper(address)));
    }
    if let Some(prefix) = bech32_prefix {
        let (address, public) = cometbft::bech32_forms(public_key, prefix)?;
        lines.push(format!("consensus:  {address} ({public})"));
    }
    let text = lines.join("\n") + "\n";
    if to_stderr {
        std::io::stderr().write_all(text.as_bytes())?;
    } else {
        std::io::stdout().write_all(text.as_bytes())?;
    }
    Ok(())
}
