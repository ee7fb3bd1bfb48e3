//! Every command and flag of `rxc`, in one place: parsing, help and completions come from here.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "rxc",
    version,
    about = "Command-line client for rxd (and LXD 5.0) servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
    Csv,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the list of remote servers.
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Show the server's information, including its certificate fingerprint.
    Info {
        /// `REMOTE:` (default: the default remote).
        remote: Option<String>,
    },
    /// Server configuration and the trust store.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Send a raw API request and print the reply's metadata.
    Query {
        /// `[REMOTE:]/1.0/...`
        target: String,
        /// HTTP method.
        #[arg(long, short = 'X', default_value = "GET")]
        request: String,
        /// JSON body.
        #[arg(long, short = 'd')]
        data: Option<String>,
        /// Print the whole reply (envelope included).
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// Add a remote: `rxc remote add NAME ADDRESS` or `rxc remote add NAME TOKEN`.
    Add(RemoteAdd),
    /// List remotes.
    List(FormatArg),
    /// Remove a remote (and its pinned certificate).
    Remove { name: String },
    /// Rename a remote.
    Rename { old: String, new: String },
    /// Make a remote the default.
    Switch { name: String },
    /// Print the default remote.
    GetDefault,
}

#[derive(Args, Debug)]
pub struct RemoteAdd {
    pub name: String,
    /// `https://host[:port]`, `host[:port]`, `[v6]:port`, `unix:///path`, or a join token.
    pub addr: String,
    /// Accept the server's certificate without asking (check its fingerprint out of band first).
    #[arg(long)]
    pub accept_certificate: bool,
    /// Trust password (prompted for without echo when needed and not given).
    #[arg(long)]
    pub password: Option<String>,
    /// Authentication type.
    #[arg(long, default_value = "tls")]
    pub auth_type: String,
    /// Project to use on this remote.
    #[arg(long, default_value = "default")]
    pub project: String,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print a server config key.
    Get {
        /// `[REMOTE:] KEY`
        #[arg(num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Set server config keys: `[REMOTE:] KEY VALUE`.
    Set {
        #[arg(num_args = 2..=3)]
        args: Vec<String>,
    },
    /// Unset a server config key: `[REMOTE:] KEY`.
    Unset {
        #[arg(num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Show the server config.
    Show { remote: Option<String> },
    /// Manage trusted client certificates.
    #[command(subcommand)]
    Trust(TrustCmd),
}

#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// List trusted certificates.
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Trust a certificate file, or with --name issue a single-use join token.
    Add {
        /// `[REMOTE:] [FILE]`
        #[arg(num_args = 0..=2)]
        args: Vec<String>,
        /// Client name: with no FILE, issue a join token for this client.
        #[arg(long)]
        name: Option<String>,
        /// Restrict the certificate to `--projects`.
        #[arg(long)]
        restricted: bool,
        /// Comma-separated projects for a restricted certificate.
        #[arg(long)]
        projects: Option<String>,
    },
    /// List pending join tokens.
    ListTokens {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Revoke a pending join token by client name or operation id.
    RevokeToken {
        /// `[REMOTE:] NAME`
        #[arg(num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Remove a trusted certificate by fingerprint (or a unique prefix).
    Remove {
        /// `[REMOTE:] FINGERPRINT`
        #[arg(num_args = 1..=2)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Import a unified image tarball: `rxc image import FILE [REMOTE:] [--alias NAME]`.
    Import {
        file: String,
        remote: Option<String>,
        /// Name the image.
        #[arg(long)]
        alias: Vec<String>,
        /// Make the image public.
        #[arg(long)]
        public: bool,
    },
    /// List images.
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show an image: `[REMOTE:]ALIAS_OR_FINGERPRINT`.
    Show { image: String },
    /// Delete an image: `[REMOTE:]ALIAS_OR_FINGERPRINT`.
    Delete { image: String },
    /// Manage image aliases.
    #[command(subcommand)]
    Alias(AliasCmd),
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    /// `[REMOTE:]NAME FINGERPRINT`
    Create {
        name: String,
        fingerprint: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// `[REMOTE:]NAME`
    Delete { name: String },
    /// `[REMOTE:]OLD NEW`
    Rename { old: String, new: String },
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
}
