//! `starling`: the server binary and its operator commands.
//!
//! `starling` or `starling serve` runs the server; `user`, `cert` and `check` manage accounts,
//! certificates and configuration. Every command takes `--config FILE`; without it the
//! built-in defaults apply (a `localhost` server with its data in `./data`).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use starling::accounts::{self, parse_account};
use starling_core::Config;

mod client_cli;

/// mimalloc instead of glibc's malloc, measured on this project's loads (see BENCHMARKS.md
/// and docs/soak.md): glibc kept the peak of every busy moment (5,000 sessions come and gone
/// left the server at 205 MiB; with mimalloc it went back to 32 MiB, so the soak's "memory
/// after each round" shows live memory, not the allocator's high-water mark), and chat
/// throughput was about 9% higher. Idle memory per session was about 2 KB higher.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "starling", version, about = "Starling XMPP server")]
struct Cli {
    /// Configuration file (see starling.example.toml). Defaults apply without it.
    #[arg(long, short, global = true, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default command).
    Serve,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Validate the configuration and report every problem with its line. With
    /// --compliance, also start this configuration in-process on loopback (throwaway data)
    /// and report which XEP-0479 (Compliance Suites 2023) server requirements a client sees.
    Check {
        /// Probe the XMPP Compliance Suites 2023 requirements.
        #[arg(long)]
        compliance: bool,
    },
    /// A command-line XMPP client with RFC 3923 end-to-end signing and encryption.
    #[command(subcommand)]
    Client(client_cli::ClientCommand),
    /// Load generator (loopback only): login, idle, chat, presence, archive, muc, churn,
    /// and relay/relay-server (the machine's limit). Each prints a `RESULT ...` line.
    Bench(starling::bench::BenchArgs),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account.
    Add {
        /// The account, e.g. alice@localhost.
        jid: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Change an account's password.
    Passwd {
        /// The account.
        jid: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Delete an account and all its data.
    Del {
        /// The account.
        jid: String,
    },
    /// List the accounts of every host (or of one).
    List {
        /// Only this host.
        host: Option<String>,
    },
}

#[derive(clap::Args)]
struct PasswordArgs {
    /// The password (visible in the process list: prefer --password-stdin in scripts).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Generate a self-signed certificate for the configured hosts.
    Generate {
        /// Directory for cert.pem and key.pem (default: <data_dir>/tls).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match starling::load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::User(cmd) => user(config, cmd).await,
            Command::Cert(CertCommand::Generate { out_dir }) => {
                let dir = out_dir.unwrap_or_else(|| config.server.data_dir.join("tls"));
                starling::cert::generate_self_signed(&config.server.hosts, &dir)?;
                println!(
                    "wrote {} and {}",
                    dir.join("cert.pem").display(),
                    dir.join("key.pem").display()
                );
                Ok(())
            }
            Command::Client(cmd) => client_cli::run(cmd).await,
            Command::Bench(args) => starling::bench::run(args, config).await,
            Command::Check { compliance } => {
                // load_config already validated; reaching here means no problem was found.
                println!(
                    "configuration OK: hosts {:?}, {} listener(s), storage {}",
                    config.server.hosts,
                    config.listeners.len(),
                    if config.storage.url.is_some() {
                        "as configured"
                    } else {
                        "sqlite in data_dir"
                    }
                );
                if compliance {
                    let seen = starling::compliance::probe(&config)
                        .await
                        .map_err(|e| e.to_string())?;
                    print!(
                        "{}",
                        starling::compliance::render(&starling::compliance::evaluate(&seen))
                    );
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only on a terminal: logs redirected to files or journald stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}

async fn serve(config: Config) -> Result<(), String> {
    let hosts = config.server.hosts.clone();
    let running = starling::start(config).await.map_err(|e| e.to_string())?;
    let storage = running.server.storage().clone();
    let mut any_account = false;
    for h in &hosts {
        any_account |= !storage
            .list_accounts(h)
            .await
            .map_err(|e| e.to_string())?
            .is_empty();
    }
    for (kind, addr) in &running.listeners.addresses {
        println!("starling: listening for {kind:?} on {addr}");
    }
    let http = &config_http_paths(&running);
    for (kind, addr) in &running.http.addresses {
        let (scheme, ws) = match kind {
            starling_core::config::ListenerKind::Https => ("https", "wss"),
            _ => ("http", "ws"),
        };
        println!(
            "starling: listening for {kind:?} on {addr} (WebSocket {ws}://{addr}{}, BOSH {scheme}://{addr}{})",
            http.0, http.1
        );
    }
    if !any_account {
        println!(
            "starling: no accounts yet. Add one (in another terminal, same directory and --config):\n    \
             cargo run --release -- user add alice@{}",
            hosts.first().map(String::as_str).unwrap_or("localhost")
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down: closing every stream with system-shutdown");
    running.shutdown().await;
    Ok(())
}

/// The WebSocket and BOSH paths of a running server.
fn config_http_paths(running: &starling::Running) -> (String, String) {
    let http = &running.server.config().http;
    (http.websocket_path.clone(), http.bosh_path.clone())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn read_password(args: PasswordArgs) -> Result<String, String> {
    if let Some(p) = args.password {
        return Ok(p);
    }
    if !args.password_stdin && std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if p != again {
            return Err("the passwords differ".into());
        }
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        return Err("no password on standard input".into());
    }
    Ok(p)
}

async fn user(config: Config, cmd: UserCommand) -> Result<(), String> {
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| e.to_string())?;
    let storage = starling_storage::open(&config.storage_url())
        .await
        .map_err(|e| e.to_string())?;
    let hosts = &config.server.hosts;
    let iterations = config.c2s.scram_iterations;
    let result = match cmd {
        UserCommand::Add { jid, password } => {
            let (host, user) = parse_account(&jid, hosts).map_err(|e| e.to_string())?;
            let password = read_password(password)?;
            accounts::add(&*storage, &host, &user, &password, iterations)
                .await
                .map(|()| println!("created {user}@{host}"))
                .map_err(|e| match e {
                    accounts::AccountError::Storage(
                        starling_storage::StorageError::AlreadyExists,
                    ) => {
                        format!("{user}@{host} already exists")
                    }
                    e => e.to_string(),
                })
        }
        UserCommand::Passwd { jid, password } => {
            let (host, user) = parse_account(&jid, hosts).map_err(|e| e.to_string())?;
            let password = read_password(password)?;
            accounts::set_password(&*storage, &host, &user, &password, iterations)
                .await
                .map(|()| println!("password changed for {user}@{host}"))
                .map_err(|e| match e {
                    accounts::AccountError::Storage(starling_storage::StorageError::NotFound) => {
                        format!("{user}@{host} does not exist")
                    }
                    e => e.to_string(),
                })
        }
        UserCommand::Del { jid } => {
            let (host, user) = parse_account(&jid, hosts).map_err(|e| e.to_string())?;
            storage
                .delete_account(&host, &user)
                .await
                .map(|()| println!("deleted {user}@{host}"))
                .map_err(|e| match e {
                    starling_storage::StorageError::NotFound => {
                        format!("{user}@{host} does not exist")
                    }
                    e => e.to_string(),
                })
        }
        UserCommand::List { host } => {
            let list: Vec<&String> = match &host {
                Some(h) => hosts.iter().filter(|x| *x == h).collect(),
                None => hosts.iter().collect(),
            };
            if list.is_empty() {
                return Err(format!(
                    "{} is not a host of this server",
                    host.unwrap_or_default()
                ));
            }
            for h in list {
                for u in storage.list_accounts(h).await.map_err(|e| e.to_string())? {
                    println!("{u}@{h}");
                }
            }
            Ok(())
        }
    };
    storage.close().await;
    result
}
