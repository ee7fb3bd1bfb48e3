//! Every command and flag of `rxc`, in one place: parsing, help and completions come from here.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "rxc",
    version,
    about = "Command-line client for rxd (and LXD 5.0) servers"
)]
pub struct Cli {
    /// Project to use, instead of the remote's current one (`rxc project switch`).
    #[arg(long, global = true, value_name = "NAME")]
    pub project: Option<String>,
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
    /// A table without borders.
    Compact,
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
    /// Show the server's information and the current project (`rxc info [REMOTE:]`) or a
    /// container's (`rxc info [REMOTE:]NAME`).
    Info {
        /// `REMOTE:` or `[REMOTE:]NAME` (default: the default remote's server information).
        target: Option<String>,
        /// The server's hardware (`lxc info --resources`): processors, memory, GPUs, NICs,
        /// disks. Only for a server, as in `lxc`.
        #[arg(long)]
        resources: bool,
    },
    /// Server configuration and the trust store.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage projects. Instances, images and operations belong to a project: commands use
    /// the remote's current project (`rxc project switch`) unless given `--project`.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Manage profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Manage and attach instances to networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage storage pools and volumes.
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Role grants (rxd): who may do what on which project. Administrators only.
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Create and start a container from an image: `rxc launch IMAGE [REMOTE:]NAME`.
    Launch(CreateArgs),
    /// Create a container from an image without starting it.
    Init(CreateArgs),
    /// Export an instance as a backup tarball (LXD's layout): `rxc export [REMOTE:]NAME
    /// [FILE]` (default `backup.tar.gz`).
    Export {
        name: String,
        file: Option<String>,
        /// Leave the snapshots out.
        #[arg(long)]
        instance_only: bool,
        /// A btrfs send stream (not supported by rxd yet).
        #[arg(long)]
        optimized_storage: bool,
        /// none, gzip, xz or zstd (default: backups.compression_algorithm, else gzip).
        #[arg(long)]
        compression: Option<String>,
    },
    /// Import a backup tarball as a new instance: `rxc import [REMOTE:] FILE [NAME]
    /// [--storage POOL]`.
    Import {
        /// `[REMOTE:]` then FILE, or FILE alone.
        args: Vec<String>,
        /// The storage pool the instance goes in.
        #[arg(long, short)]
        storage: Option<String>,
    },
    /// Make an image of a stopped container or of a snapshot: `rxc publish
    /// [REMOTE:]NAME[/SNAPSHOT] [--alias A] [--public] [--compression ALG] [KEY=VALUE...]`
    /// (properties of the image).
    Publish {
        source: String,
        /// Properties of the image (`KEY=VALUE`; they replace the instance's image's).
        properties: Vec<String>,
        /// Name the image.
        #[arg(long)]
        alias: Vec<String>,
        /// Make the image public.
        #[arg(long)]
        public: bool,
        /// none, gzip, xz or zstd (default: the project's or server's
        /// images.compression_algorithm, else gzip).
        #[arg(long)]
        compression: Option<String>,
        /// Stop a running container first, and start it again after.
        #[arg(long, short)]
        force: bool,
    },
    /// Start containers.
    Start { names: Vec<String> },
    /// Stop containers (asking their init to halt, unless --force).
    Stop(StopArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Freeze containers.
    Pause { names: Vec<String> },
    /// Delete containers (--force stops running ones first).
    Delete {
        names: Vec<String>,
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Copy a container, or one of its snapshots, on the same server: `rxc copy
    /// [REMOTE:]SOURCE[/SNAPSHOT] [REMOTE:]NAME` (its snapshots too unless `--instance-only`;
    /// the copy gets new MAC addresses and, if isolated, its own ids).
    #[command(alias = "cp")]
    Copy(CopyArgs),
    /// Rename a stopped container, or move it to another storage pool or project: `rxc rename
    /// [REMOTE:]OLD NEW`, `rxc move [REMOTE:]NAME [NEW] -s POOL`, `rxc move NAME
    /// --target-project P`.
    #[command(alias = "move", alias = "mv")]
    Rename {
        old: String,
        new: Option<String>,
        /// Move it to this storage pool (stopped), as `lxc move -s`.
        #[arg(long, short = 's')]
        storage: Option<String>,
        /// Move it to this project (stopped), as `lxc move --target-project`.
        #[arg(long)]
        target_project: Option<String>,
    },
    /// Run a command in a container: `rxc exec [REMOTE:]NAME [--env K=V] -- CMD...`. Standard
    /// input, output and error are passed through; rxc exits with the command's status.
    Exec(ExecArgs),
    /// Snapshot a container: `rxc snapshot [REMOTE:]NAME [SNAP]` (default name `snapN`).
    /// `rxc delete NAME/SNAP` removes one.
    Snapshot {
        name: String,
        snapshot: Option<String>,
    },
    /// Restore a container from a snapshot: `rxc restore [REMOTE:]NAME SNAP` (a running
    /// container is stopped, restored and started again).
    Restore { name: String, snapshot: String },
    /// Attach to a container's console (`rxc console [REMOTE:]NAME`; Ctrl+a q detaches), or
    /// print its log (`--show-log`).
    Console {
        name: String,
        /// Print the console log instead of attaching.
        #[arg(long)]
        show_log: bool,
    },
    /// Files inside a container.
    #[command(subcommand)]
    File(FileCmd),
    /// List containers: `rxc list [REMOTE:] [FILTER...]`, as `lxc list` does.
    ///
    /// A filter is a name prefix or regular expression (`web`, `.*01$`), a config key and
    /// value (`user.role=web`; key parts may be abbreviated: `u.role=web`; the value is a
    /// regular expression), or a shorthand: `type=`, `status=`, `architecture=`, `location=`,
    /// `ipv4=`, `ipv6=` (an address or a CIDR; values separated by `,` match any). Filters
    /// add up.
    ///
    /// Columns (`-c`, default `ns46tS`): 4 IPv4, 6 IPv6, a architecture, b storage pool,
    /// c created at, d description, D disk usage, e project, f/F base image (short/long),
    /// l last used at, m memory usage, M memory usage %, n name, N processes, p PID,
    /// P profiles, s state, S snapshots, t type, u CPU usage; or
    /// `[config:|devices:]KEY[:NAME][:MAXWIDTH]`.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Command aliases, kept in config.yml as lxc keeps them (`rxc alias add ls "list -c ns"`).
    #[command(subcommand)]
    Alias(UserAliasCmd),
    /// Print the server's events as they happen: `rxc monitor [REMOTE:]` (Ctrl-C ends it).
    Monitor(MonitorArgs),
    /// Print a shell completion script: `rxc completion bash >
    /// /usr/share/bash-completion/completions/rxc` (also zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (`rxc.1`, and `rxc-list.1`... for each subcommand) into DIR.
    Manpages { dir: std::path::PathBuf },
    /// Print the client's and the server's versions: `rxc version [REMOTE:]`.
    Version { remote: Option<String> },
    /// Background operations: `rxc operation list [REMOTE:]`.
    #[command(subcommand)]
    Operation(OperationCmd),
    /// The server's warnings: `rxc warning list [REMOTE:]`.
    #[command(subcommand)]
    Warning(WarningCmd),
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

/// `rxc alias ...`.
#[derive(Subcommand, Debug)]
pub enum UserAliasCmd {
    /// Add an alias: `rxc alias add ALIAS TARGET`. In TARGET, `@ARGS@` stands for the words
    /// that follow the alias (added at the end when TARGET does not say where), `@ARG1@`,
    /// `@ARG2@`... for one each; a TARGET starting with `/` is a program run instead of rxc.
    Add { alias: String, target: String },
    /// Remove an alias.
    #[command(alias = "rm")]
    Remove { alias: String },
    /// List aliases.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Rename an alias.
    #[command(alias = "mv")]
    Rename { old: String, new: String },
}

/// How `rxc monitor` prints an event.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum MonitorFormat {
    /// A YAML document and a blank line.
    #[default]
    Yaml,
    /// One JSON line and a blank line.
    Json,
    /// A log line (colours only on a terminal).
    Pretty,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// `REMOTE:` (default: the default remote).
    pub remote: Option<String>,
    /// Event type to show: `lifecycle`, `operation` or `logging` (repeatable; default: the
    /// first two; `logging` is the server's security log, for administrators).
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Pretty rendering (short for --format=pretty).
    #[arg(long)]
    pub pretty: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = MonitorFormat::Yaml)]
    pub format: MonitorFormat,
    /// Minimum level of the messages shown (with --pretty): error, warning, info, debug.
    #[arg(long)]
    pub loglevel: Option<String>,
    /// Show the events of every project you may see.
    #[arg(long)]
    pub all_projects: bool,
}

/// `rxc list`'s columns unless `-c` says otherwise (`L`, the location, shows only in a cluster).
pub const DEFAULT_COLUMNS: &str = "ns46tSL";

#[derive(Args, Debug)]
pub struct ListArgs {
    /// `[REMOTE:]` and filters.
    pub args: Vec<String>,
    /// Columns: shorthand characters and `[config:|devices:]KEY[:NAME][:MAXWIDTH]`, separated
    /// by commas (optional between shorthand characters).
    #[arg(long, short = 'c', default_value = DEFAULT_COLUMNS, hide_default_value = true)]
    pub columns: String,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Fast mode (same as --columns=nsacPt).
    #[arg(long)]
    pub fast: bool,
    /// Show the instances of every project you may see (adds a PROJECT column).
    #[arg(long)]
    pub all_projects: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// `[REMOTE:]ALIAS_OR_FINGERPRINT` of an image on the same server.
    pub image: String,
    /// `[REMOTE:]NAME` of the new container.
    pub name: String,
    /// Config keys: `-c KEY=VALUE` (repeatable).
    #[arg(long = "config", short = 'c')]
    pub config: Vec<String>,
    /// Create an ephemeral container.
    #[arg(long, short = 'e')]
    pub ephemeral: bool,
    /// Profiles to apply, in order (repeatable); without one, the image's (`default`).
    #[arg(long = "profile", short = 'p')]
    pub profiles: Vec<String>,
    /// Create the container with no profiles at all.
    #[arg(long, conflicts_with = "profiles")]
    pub no_profiles: bool,
    /// Give it an `eth0` on this network (over a profile's `eth0`), as `lxc launch -n`.
    #[arg(long, short = 'n')]
    pub network: Option<String>,
    /// Put its root disk in this storage pool (over a profile's), as `lxc launch -s`.
    #[arg(long, short = 's')]
    pub storage: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct CopyArgs {
    /// `[REMOTE:]NAME` or `[REMOTE:]NAME/SNAPSHOT`.
    pub source: String,
    /// `[REMOTE:]NAME` of the copy.
    pub name: String,
    /// Config keys over the source's: `-c KEY=VALUE` (repeatable).
    #[arg(long = "config", short = 'c')]
    pub config: Vec<String>,
    /// Profiles for the copy, in order (repeatable); without one, the source's.
    #[arg(long = "profile", short = 'p')]
    pub profiles: Vec<String>,
    /// The copy has no profiles at all.
    #[arg(long, conflicts_with = "profiles")]
    pub no_profiles: bool,
    /// Leave the source's snapshots behind.
    #[arg(long)]
    pub instance_only: bool,
    /// Make the copy ephemeral.
    #[arg(long, short = 'e')]
    pub ephemeral: bool,
    /// Put the copy in this project (the source stays in the current one).
    #[arg(long)]
    pub target_project: Option<String>,
    /// Put the copy's root disk in this storage pool, as `lxc copy -s`.
    #[arg(long, short = 's')]
    pub storage: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum FileCmd {
    /// Copy files out of a container: `rxc file pull [REMOTE:]NAME/PATH... LOCAL` (`-`:
    /// stdout). With several sources or `-r`, LOCAL is a directory (created if missing).
    Pull {
        /// `[REMOTE:]NAME/PATH...` then `LOCAL`.
        #[arg(num_args = 2.., required = true)]
        paths: Vec<String>,
        /// Copy directories and what they hold.
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Copy files into a container: `rxc file push LOCAL... [REMOTE:]NAME/PATH` (a PATH ending
    /// in `/` keeps the file's name). Owner root and the local file's mode unless given; with
    /// `-r`, directories and what they hold, with their local owners and modes.
    Push {
        /// `LOCAL...` then `[REMOTE:]NAME/PATH`.
        #[arg(num_args = 2.., required = true)]
        paths: Vec<String>,
        /// Copy directories and what they hold.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Owner inside the container.
        #[arg(long)]
        uid: Option<u32>,
        /// Group inside the container.
        #[arg(long)]
        gid: Option<u32>,
        /// Permission bits, in octal (default: the local file's).
        #[arg(long)]
        mode: Option<String>,
    },
    /// Edit a file in a container in $VISUAL/$EDITOR (or replace it with standard input when
    /// that is not a terminal): `rxc file edit [REMOTE:]NAME/PATH`. Owner and mode are kept.
    Edit { target: String },
    /// Remove files or empty directories: `rxc file delete [REMOTE:]NAME/PATH...`.
    #[command(alias = "rm")]
    Delete { targets: Vec<String> },
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    pub name: String,
    /// Environment variables: `--env KEY=VALUE` (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// User id to run as.
    #[arg(long, default_value_t = 0)]
    pub user: u32,
    /// Group id to run as.
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    /// Never use a terminal (pipes for stdin, stdout and stderr).
    #[arg(
        short = 'T',
        long = "force-noninteractive",
        conflicts_with = "interactive"
    )]
    pub noninteractive: bool,
    /// Always use a terminal (the default when stdin and stdout are terminals).
    #[arg(short = 't', long = "force-interactive")]
    pub interactive: bool,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    pub names: Vec<String>,
    /// Kill the container instead of asking it to halt.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Seconds to wait for a clean halt (-1: as long as it takes).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub timeout: i64,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// Add a remote: `rxc remote add NAME ADDRESS` or `rxc remote add NAME TOKEN`.
    Add(RemoteAdd),
    /// List remotes.
    List(FormatArg),
    /// Remove a remote (and its pinned certificate and Candid cookie jar).
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
    /// Authentication type: `tls` (this client's certificate) or `candid` (a login at the
    /// server's Candid). Default: `candid` when the server offers it and no --password is
    /// given, else `tls`.
    #[arg(long, value_parser = ["tls", "candid"])]
    pub auth_type: Option<String>,
    /// Candid agent file (`{"key":{..},"agents":[{"url","username"}]}`): log in as that agent,
    /// without a person, now and whenever the login expires. Implies `--auth-type=candid`.
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub candid_agent: Option<std::path::PathBuf>,
    /// Candid domain, passed to the browser login page.
    #[arg(long)]
    pub domain: Option<String>,
    /// Project to use on this remote.
    #[arg(long, default_value = "default")]
    pub project: String,
    /// What the remote speaks: `lxd` (an rxd or LXD server) or `simplestreams` (an image
    /// server, `https` only: images to launch from and copy, nothing else).
    #[arg(long, default_value = "lxd", value_parser = ["lxd", "simplestreams"])]
    pub protocol: String,
    /// A public image server: no client certificate, no trust needed (simplestreams remotes
    /// always are).
    #[arg(long)]
    pub public: bool,
}

/// Server config (`[REMOTE:] KEY ...`) or, when the first argument names an instance,
/// that instance's config (`[REMOTE:]INSTANCE KEY ...`).
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print a server config key, or an instance's: `[REMOTE:]INSTANCE KEY`.
    Get {
        /// `[REMOTE:] KEY`
        #[arg(num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Set server config keys (`[REMOTE:] KEY VALUE [KEY VALUE...]` or
    /// `[REMOTE:] KEY=VALUE...`) or an instance's (`[REMOTE:]INSTANCE KEY VALUE...` or
    /// `[REMOTE:]INSTANCE KEY=VALUE...`), all in one request: keys that must change together
    /// (`candid.agent.username` and `candid.agent.private_key`) can.
    Set {
        #[arg(num_args = 1.., required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unset server config keys (`[REMOTE:] KEY...`) or an instance's
    /// (`[REMOTE:]INSTANCE KEY...`), all in one request.
    Unset {
        #[arg(num_args = 1.., required = true)]
        args: Vec<String>,
    },
    /// Show the server config (`[REMOTE:]`) or an instance's (`[REMOTE:]INSTANCE`).
    Show {
        remote: Option<String>,
        /// An instance's config and devices with its profiles applied.
        #[arg(long)]
        expanded: bool,
    },
    /// Edit the server config (`[REMOTE:]`) or an instance's (`[REMOTE:]INSTANCE`) as YAML:
    /// in $VISUAL or $EDITOR from a terminal, else read from standard input
    /// (`rxc config show c1 > c1.yaml; ...; rxc config edit c1 < c1.yaml`).
    Edit { target: Option<String> },
    /// An instance's devices.
    #[command(subcommand)]
    Device(ConfigDeviceCmd),
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
    /// Show a trusted certificate: `rxc config trust show [REMOTE:]FINGERPRINT`.
    Show {
        /// `[REMOTE:]FINGERPRINT`
        fingerprint: String,
    },
    /// Edit a trusted certificate's name, restriction and projects as YAML ($EDITOR from a
    /// terminal, else standard input): `rxc config trust edit [REMOTE:]FINGERPRINT`.
    Edit {
        /// `[REMOTE:]FINGERPRINT`
        fingerprint: String,
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
    /// Import an image: a unified tarball, or a split image's metadata tarball and root
    /// filesystem (tarball or squashfs): `rxc image import FILE [ROOTFS] [REMOTE:] [--alias NAME]`.
    Import {
        /// `FILE [ROOTFS] [REMOTE:]`
        #[arg(num_args = 1..=3, required = true)]
        args: Vec<String>,
        /// Name the image.
        #[arg(long)]
        alias: Vec<String>,
        /// Make the image public.
        #[arg(long)]
        public: bool,
    },
    /// Copy an image from an image server to a server: `rxc image copy REMOTE:IMAGE
    /// [TARGET:] [--alias NAME] [--auto-update] [--public]` (the target server downloads it).
    Copy {
        image: String,
        target: Option<String>,
        /// Name the copy on the target.
        #[arg(long)]
        alias: Vec<String>,
        /// Keep it up to date from the server (when named by alias).
        #[arg(long)]
        auto_update: bool,
        /// Make the copy public.
        #[arg(long)]
        public: bool,
    },
    /// Write an image's files: `rxc image export [REMOTE:]IMAGE [TARGET]` (one tarball, or a
    /// metadata tarball and a root filesystem; TARGET a directory or a file name, default the
    /// current directory).
    Export {
        image: String,
        target: Option<String>,
    },
    /// List images.
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show an image: `[REMOTE:]ALIAS_OR_FINGERPRINT`.
    Show { image: String },
    /// Describe an image as `lxc image info` does: `[REMOTE:]ALIAS_OR_FINGERPRINT`.
    Info { image: String },
    /// Edit an image's properties and `public` flag as YAML ($EDITOR from a terminal, else
    /// standard input): `[REMOTE:]ALIAS_OR_FINGERPRINT`.
    Edit { image: String },
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

#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// Create a project: `rxc project create [REMOTE:]NAME [-c KEY=VALUE]...`.
    Create {
        name: String,
        /// Config keys: `-c KEY=VALUE` (repeatable).
        #[arg(long = "config", short = 'c')]
        config: Vec<String>,
        /// Description of the project.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the projects you may see; the current one is marked `(current)`.
    #[command(alias = "ls")]
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show a project: `rxc project show [REMOTE:]NAME`.
    Show { name: String },
    /// Show a project's limits and what its instances use of them: `rxc project info
    /// [REMOTE:]NAME`.
    Info {
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Edit a project's config and description as YAML ($EDITOR from a terminal, else
    /// standard input): `rxc project edit [REMOTE:]NAME`.
    Edit { name: String },
    /// Print one config key of a project: `rxc project get [REMOTE:]NAME KEY`.
    Get { name: String, key: String },
    /// Set a project config key: `rxc project set [REMOTE:]NAME KEY VALUE` (or `KEY=VALUE`).
    Set {
        name: String,
        /// `KEY VALUE` or `KEY=VALUE`
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Remove a project config key: `rxc project unset [REMOTE:]NAME KEY`.
    Unset { name: String, key: String },
    /// Rename a project: `rxc project rename [REMOTE:]OLD NEW`.
    #[command(alias = "mv")]
    Rename { old: String, new: String },
    /// Delete an (empty) project: `rxc project delete [REMOTE:]NAME`.
    #[command(alias = "rm")]
    Delete { name: String },
    /// Make a project the remote's current one: `rxc project switch [REMOTE:]NAME`.
    Switch { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// Create a profile: `rxc profile create [REMOTE:]NAME` (YAML on standard input, when
    /// it is not a terminal, gives its config, description and devices).
    Create {
        name: String,
        /// Description of the profile.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the profiles of the current project: `rxc profile list [REMOTE:]`.
    #[command(alias = "ls")]
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show a profile: `rxc profile show [REMOTE:]NAME`.
    Show { name: String },
    /// Edit a profile as YAML ($EDITOR from a terminal, else standard input).
    Edit { name: String },
    /// Print one config key of a profile: `rxc profile get [REMOTE:]NAME KEY`.
    Get { name: String, key: String },
    /// Set profile config keys: `rxc profile set [REMOTE:]NAME KEY VALUE` (or `KEY=VALUE...`).
    Set {
        name: String,
        #[arg(num_args = 1.., required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Remove a profile config key: `rxc profile unset [REMOTE:]NAME KEY`.
    Unset { name: String, key: String },
    /// Copy a profile: `rxc profile copy [REMOTE:]NAME NEW`.
    #[command(alias = "cp")]
    Copy { source: String, target: String },
    /// Rename a profile; instances using it follow: `rxc profile rename [REMOTE:]OLD NEW`.
    #[command(alias = "mv")]
    Rename { old: String, new: String },
    /// Delete a profile no instance uses: `rxc profile delete [REMOTE:]NAME`.
    #[command(alias = "rm")]
    Delete { name: String },
    /// Append a profile to an instance's list: `rxc profile add [REMOTE:]INSTANCE PROFILE`.
    Add { instance: String, profile: String },
    /// Remove a profile from an instance's list: `rxc profile remove [REMOTE:]INSTANCE PROFILE`.
    Remove { instance: String, profile: String },
    /// Replace an instance's profiles: `rxc profile assign [REMOTE:]INSTANCE P1,P2,...` (an
    /// empty list removes them all).
    Assign { instance: String, profiles: String },
    /// A profile's devices.
    #[command(subcommand)]
    Device(DeviceCmd),
}

/// `rxc network ...`, as `lxc network` 5.0 has them. NETWORK is `[REMOTE:]NAME`; the instance
/// or profile of `attach`/`detach` is on the same remote.
#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Attach new network interfaces to instances: `rxc network attach [REMOTE:]NETWORK
    /// INSTANCE [DEVICE] [INTERFACE]` (the device is named after the network unless given;
    /// INTERFACE is its name inside the instance).
    Attach {
        /// `[REMOTE:]NETWORK`
        network: String,
        /// An instance on the network's remote.
        instance: String,
        /// Device name (default: the network's name).
        device: Option<String>,
        /// Interface name inside the instance.
        interface: Option<String>,
    },
    /// Attach network interfaces to profiles: `rxc network attach-profile [REMOTE:]NETWORK
    /// PROFILE [DEVICE] [INTERFACE]`.
    AttachProfile {
        /// `[REMOTE:]NETWORK`
        network: String,
        /// A profile on the network's remote.
        profile: String,
        /// Device name (default: the network's name).
        device: Option<String>,
        /// Interface name inside the instances.
        interface: Option<String>,
    },
    /// Create new networks: `rxc network create [REMOTE:]NETWORK [KEY=VALUE...]`.
    Create {
        name: String,
        /// Config keys: `KEY=VALUE...`.
        config: Vec<String>,
        /// Network type (default: the server's, `bridge`).
        #[arg(long = "type", short = 't', value_name = "TYPE")]
        kind: Option<String>,
        /// Description of the network.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete networks: `rxc network delete [REMOTE:]NETWORK`.
    #[command(alias = "rm")]
    Delete { name: String },
    /// Detach network interfaces from instances: `rxc network detach [REMOTE:]NETWORK
    /// INSTANCE [DEVICE]` (without DEVICE, the one NIC using the network).
    Detach {
        /// `[REMOTE:]NETWORK`
        network: String,
        /// An instance on the network's remote.
        instance: String,
        /// Device name (default: the one NIC device using the network).
        device: Option<String>,
    },
    /// Detach network interfaces from profiles: `rxc network detach-profile
    /// [REMOTE:]NETWORK PROFILE [DEVICE]`.
    DetachProfile {
        /// `[REMOTE:]NETWORK`
        network: String,
        /// A profile on the network's remote.
        profile: String,
        /// Device name (default: the one NIC device using the network).
        device: Option<String>,
    },
    /// Edit network configurations as YAML ($EDITOR from a terminal, else standard input):
    /// `rxc network edit [REMOTE:]NETWORK`.
    Edit { name: String },
    /// Get values for network configuration keys: `rxc network get [REMOTE:]NETWORK KEY`.
    Get { name: String, key: String },
    /// Get runtime information on networks: `rxc network info [REMOTE:]NETWORK`.
    Info { name: String },
    /// List available networks: `rxc network list [REMOTE:]`.
    #[command(alias = "ls")]
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List DHCP leases: `rxc network list-leases [REMOTE:]NETWORK`.
    ListLeases {
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Rename networks: `rxc network rename [REMOTE:]NETWORK NEW`.
    #[command(alias = "mv")]
    Rename { old: String, new: String },
    /// Set network configuration keys: `rxc network set [REMOTE:]NETWORK KEY=VALUE...` (or,
    /// for one key, `KEY VALUE`).
    Set {
        name: String,
        #[arg(num_args = 1.., required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show network configurations: `rxc network show [REMOTE:]NETWORK`.
    Show { name: String },
    /// Unset network configuration keys: `rxc network unset [REMOTE:]NETWORK KEY`.
    Unset { name: String, key: String },
}

/// `rxc storage ...`, as `lxc storage` 5.0 has them. POOL is `[REMOTE:]POOL`.
#[derive(Subcommand, Debug)]
pub enum StorageCmd {
    /// Create storage pools: `rxc storage create [REMOTE:]POOL DRIVER [KEY=VALUE...]`.
    Create {
        pool: String,
        /// `dir`, `btrfs` (and, on LXD, `zfs`, `lvm`, `ceph`, `cephfs`).
        driver: String,
        /// Config keys: `KEY=VALUE...` (`source=`, `size=`...).
        config: Vec<String>,
        /// Description of the pool (rxc only: lxc 5.0 has no such flag).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete storage pools: `rxc storage delete [REMOTE:]POOL`.
    #[command(alias = "rm")]
    Delete { pool: String },
    /// Edit storage pool configurations as YAML ($EDITOR from a terminal, else standard
    /// input): `rxc storage edit [REMOTE:]POOL`.
    Edit { pool: String },
    /// Get values for storage pool configuration keys: `rxc storage get [REMOTE:]POOL KEY`.
    Get { pool: String, key: String },
    /// Show useful information about storage pools: `rxc storage info [REMOTE:]POOL`.
    Info {
        pool: String,
        /// Show the used and free space in bytes.
        #[arg(long)]
        bytes: bool,
    },
    /// List available storage pools: `rxc storage list [REMOTE:]`.
    #[command(alias = "ls")]
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Set storage pool configuration keys: `rxc storage set [REMOTE:]POOL KEY=VALUE...` (or,
    /// for one key, `KEY VALUE`).
    Set {
        pool: String,
        #[arg(num_args = 1.., required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show storage pool configurations and resources: `rxc storage show [REMOTE:]POOL`.
    Show {
        pool: String,
        /// Show the resources available to the storage pool.
        #[arg(long)]
        resources: bool,
    },
    /// Unset storage pool configuration keys: `rxc storage unset [REMOTE:]POOL KEY`.
    Unset { pool: String, key: String },
    /// Manage storage volumes. Unless given a `TYPE/` prefix (`custom`, `container`,
    /// `virtual-machine`, `image`), a volume is a custom (user created) one.
    #[command(subcommand)]
    Volume(StorageVolumeCmd),
}

/// `rxc storage volume ...`, as `lxc storage volume` 5.0 has them. POOL is `[REMOTE:]POOL`,
/// VOLUME `[TYPE/]NAME` (`NAME/SNAPSHOT` where a snapshot is taken); the instance or profile
/// is on the pool's remote.
#[derive(Subcommand, Debug)]
pub enum StorageVolumeCmd {
    /// Attach new storage volumes to instances: `rxc storage volume attach [REMOTE:]POOL
    /// VOLUME INSTANCE [DEVICE] [PATH]` (one more argument is the PATH; the device is named
    /// after the volume unless given).
    Attach {
        pool: String,
        volume: String,
        instance: String,
        /// The device name, when PATH follows; else the PATH.
        #[arg(value_name = "DEVICE|PATH")]
        first: Option<String>,
        /// Where the volume is mounted in the instance.
        #[arg(value_name = "PATH")]
        second: Option<String>,
    },
    /// Attach new storage volumes to profiles: `rxc storage volume attach-profile
    /// [REMOTE:]POOL VOLUME PROFILE [DEVICE] [PATH]`.
    AttachProfile {
        pool: String,
        volume: String,
        profile: String,
        /// The device name, when PATH follows; else the PATH.
        #[arg(value_name = "DEVICE|PATH")]
        first: Option<String>,
        /// Where the volume is mounted in the instances.
        #[arg(value_name = "PATH")]
        second: Option<String>,
    },
    /// Create new custom storage volumes: `rxc storage volume create [REMOTE:]POOL VOLUME
    /// [KEY=VALUE...]`.
    Create {
        pool: String,
        volume: String,
        /// Config keys: `KEY=VALUE...` (`size=`...).
        config: Vec<String>,
        /// Content type, block or filesystem.
        #[arg(long = "type", default_value = "filesystem", value_name = "TYPE")]
        content_type: String,
    },
    /// Delete storage volumes or their snapshots: `rxc storage volume delete [REMOTE:]POOL
    /// VOLUME[/SNAPSHOT]`.
    #[command(alias = "rm")]
    Delete { pool: String, volume: String },
    /// Detach storage volumes from instances: `rxc storage volume detach [REMOTE:]POOL VOLUME
    /// INSTANCE [DEVICE]` (without DEVICE, the one disk using the volume).
    Detach {
        pool: String,
        volume: String,
        instance: String,
        device: Option<String>,
    },
    /// Detach storage volumes from profiles: `rxc storage volume detach-profile [REMOTE:]POOL
    /// VOLUME PROFILE [DEVICE]`.
    DetachProfile {
        pool: String,
        volume: String,
        profile: String,
        device: Option<String>,
    },
    /// Edit storage volume configurations as YAML: `rxc storage volume edit [REMOTE:]POOL
    /// VOLUME[/SNAPSHOT]`.
    Edit { pool: String, volume: String },
    /// Get values for storage volume configuration keys: `rxc storage volume get
    /// [REMOTE:]POOL VOLUME[/SNAPSHOT] KEY`.
    Get {
        pool: String,
        volume: String,
        key: String,
    },
    /// List storage volumes: `rxc storage volume list [REMOTE:]POOL [KEY=VALUE...]` (filters
    /// the server applies).
    ///
    /// Columns (`-c`, default `etndcuL`): c content type, d description, e project (with
    /// `--all-projects`), L location (on a cluster), n name, t type, u used by (count),
    /// U disk usage.
    #[command(alias = "ls")]
    List {
        pool: String,
        filters: Vec<String>,
        #[arg(long, short = 'c', default_value = "etndcuL")]
        columns: String,
        /// The volumes of every project.
        #[arg(long)]
        all_projects: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Copy custom storage volumes: `rxc storage volume copy [REMOTE:]POOL/VOLUME[/SNAPSHOT]
    /// [REMOTE:]POOL/VOLUME` (with the volume's snapshots unless --volume-only).
    Copy {
        source: String,
        target: String,
        /// Copy the volume without its snapshots.
        #[arg(long)]
        volume_only: bool,
    },
    /// Move or rename custom storage volumes: `rxc storage volume move
    /// [REMOTE:]POOL/VOLUME [REMOTE:]POOL/VOLUME [--target-project P]` (with its snapshots).
    Move {
        source: String,
        target: String,
        /// Move it to this project, as `lxc storage volume move --target-project`.
        #[arg(long)]
        target_project: Option<String>,
    },
    /// Rename storage volumes and their snapshots: `rxc storage volume rename [REMOTE:]POOL
    /// OLD[/SNAP] NEW[/SNAP]`.
    Rename {
        pool: String,
        old: String,
        new: String,
    },
    /// Restore storage volume snapshots: `rxc storage volume restore [REMOTE:]POOL VOLUME
    /// SNAPSHOT`.
    Restore {
        pool: String,
        volume: String,
        snapshot: String,
    },
    /// Set storage volume configuration keys: `rxc storage volume set [REMOTE:]POOL VOLUME
    /// KEY=VALUE...` (or, for one key, `KEY VALUE`).
    Set {
        pool: String,
        volume: String,
        #[arg(num_args = 1.., required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show storage volume configurations: `rxc storage volume show [REMOTE:]POOL
    /// VOLUME[/SNAPSHOT]`.
    Show { pool: String, volume: String },
    /// Snapshot storage volumes: `rxc storage volume snapshot [REMOTE:]POOL VOLUME
    /// [SNAPSHOT]` (named by the volume's `snapshots.pattern`, `snap%d`, unless given).
    Snapshot {
        pool: String,
        volume: String,
        snapshot: Option<String>,
        /// Ignore any configured auto-expiry for the storage volume.
        #[arg(long)]
        no_expiry: bool,
        /// If the snapshot name already exists, delete and create a new one.
        #[arg(long)]
        reuse: bool,
    },
    /// Unset storage volume configuration keys: `rxc storage volume unset [REMOTE:]POOL
    /// VOLUME KEY`.
    Unset {
        pool: String,
        volume: String,
        key: String,
    },
}

/// Devices of a profile (`rxc profile device ...`) or an instance (`rxc config device ...`):
/// TARGET is `[REMOTE:]PROFILE` or `[REMOTE:]INSTANCE`.
#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// Add a device: `... device add [REMOTE:]TARGET DEVICE TYPE [KEY=VALUE...]`.
    Add {
        target: String,
        device: String,
        kind: String,
        options: Vec<String>,
    },
    /// Remove devices: `... device remove [REMOTE:]TARGET DEVICE...`.
    #[command(alias = "rm")]
    Remove {
        target: String,
        #[arg(num_args = 1.., required = true)]
        devices: Vec<String>,
    },
    /// List the devices by name.
    #[command(alias = "ls")]
    List { target: String },
    /// Show the devices as YAML.
    Show { target: String },
    /// Print one key of a device: `... device get [REMOTE:]TARGET DEVICE KEY`.
    Get {
        target: String,
        device: String,
        key: String,
    },
    /// Set keys of a device: `... device set [REMOTE:]TARGET DEVICE KEY=VALUE...` (or `KEY VALUE`).
    Set {
        target: String,
        device: String,
        #[arg(num_args = 1.., required = true)]
        args: Vec<String>,
    },
    /// Remove a key of a device: `... device unset [REMOTE:]TARGET DEVICE KEY`.
    Unset {
        target: String,
        device: String,
        key: String,
    },
}

/// `rxc config device ...`: an instance's own devices, and `override`.
#[derive(Subcommand, Debug)]
pub enum ConfigDeviceCmd {
    #[command(flatten)]
    Common(DeviceCmd),
    /// Copy a device the instance has from a profile into its own devices, with keys changed:
    /// `rxc config device override [REMOTE:]INSTANCE DEVICE [KEY=VALUE...]`.
    Override {
        target: String,
        device: String,
        args: Vec<String>,
    },
}

/// Kinds of identity a role can be granted to.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum IdentityType {
    /// A trusted TLS client, named by its certificate's fingerprint (or a unique prefix).
    #[default]
    Certificate,
    /// An externally authenticated (Candid) user.
    CandidUser,
    /// Every member of an externally authenticated (Candid) group.
    CandidGroup,
}

impl IdentityType {
    pub fn wire(self) -> &'static str {
        match self {
            IdentityType::Certificate => "certificate",
            IdentityType::CandidUser => "candid-user",
            IdentityType::CandidGroup => "candid-group",
        }
    }
}

/// Roles, in increasing power.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RoleArg {
    /// View the project.
    Auditor,
    /// Also operate its containers (start, stop, exec, console, files, snapshots).
    User,
    /// Also create, reconfigure and delete containers, and manage images.
    Operator,
    /// Also reconfigure the project; with --server, administer the whole server.
    Admin,
}

impl RoleArg {
    pub fn wire(self) -> &'static str {
        match self {
            RoleArg::Auditor => "auditor",
            RoleArg::User => "user",
            RoleArg::Operator => "operator",
            RoleArg::Admin => "admin",
        }
    }
}

/// Where a grant applies: exactly one of these. (Within `rxc auth`, `--project` names the
/// grant's project, not the project requests are made in.)
#[derive(Args, Debug, Clone)]
#[group(id = "scope", multiple = false)]
pub struct ScopeArgs {
    /// On one project.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// On every project, including ones created later.
    #[arg(long)]
    pub all_projects: bool,
    /// On the whole server (with `admin`: the server administrator).
    #[arg(long)]
    pub server: bool,
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// List role grants.
    #[command(alias = "ls")]
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Grant a role: `rxc auth grant [REMOTE:] IDENTITY ROLE (--project P | --all-projects |
    /// --server)`. A certificate is named by its fingerprint or a unique prefix of it.
    Grant {
        /// `[REMOTE:] IDENTITY ROLE`; ROLE is auditor (views), user (also operates containers),
        /// operator (also creates them and manages images) or admin.
        #[arg(num_args = 2..=3, required = true)]
        args: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// What IDENTITY names.
        #[arg(long = "type", value_enum, default_value_t = IdentityType::Certificate)]
        identity_type: IdentityType,
    },
    /// Revoke a grant: by id (`rxc auth revoke [REMOTE:] ID`, ids from `rxc auth list`) or
    /// as it was granted (`rxc auth revoke [REMOTE:] IDENTITY ROLE --project P`).
    Revoke {
        /// `[REMOTE:] ID` or `[REMOTE:] IDENTITY ROLE`
        #[arg(num_args = 1..=3, required = true)]
        args: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// What IDENTITY names.
        #[arg(long = "type", value_enum, default_value_t = IdentityType::Certificate)]
        identity_type: IdentityType,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn project_is_global_and_scopes_grants_under_auth() {
        let cli = Cli::try_parse_from(["rxc", "list", "--project", "p1"]).unwrap();
        assert_eq!(cli.project.as_deref(), Some("p1"));
        let cli = Cli::try_parse_from(["rxc", "--project", "p2", "image", "list"]).unwrap();
        assert_eq!(cli.project.as_deref(), Some("p2"));
        let cli =
            Cli::try_parse_from(["rxc", "auth", "grant", "ab12", "auditor", "--project", "p1"])
                .unwrap();
        let Command::Auth(AuthCmd::Grant { scope, args, .. }) = cli.command else {
            panic!("not a grant")
        };
        assert_eq!(scope.project.as_deref(), Some("p1"));
        assert_eq!(args, ["ab12", "auditor"]);
        assert!(Cli::try_parse_from([
            "rxc",
            "auth",
            "grant",
            "ab",
            "user",
            "--server",
            "--all-projects"
        ])
        .is_err());
    }
}

#[derive(Subcommand, Debug)]
pub enum OperationCmd {
    /// List the operations of the current project (with the server's, for administrators).
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum WarningCmd {
    /// List the server's warnings.
    List {
        remote: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
}
