//! Commands sent to hosts, built as data: a program and its arguments, turned into shell
//! text by one quoting helper, [`shell_quote`]. Nothing else in ServOS builds shell text.
//!
//! Quoting makes every argument one literal word for the remote `sh`; it does not stop a
//! program from reading an argument that starts with `-` as an option. Callers that pass
//! user input put it after `--` or behind a `--flag=` of their own.

use std::fmt;
use std::time::Duration;

/// Quotes `s` as a single word for a POSIX shell. Strings made only of characters that
/// no shell treats specially (`A-Z a-z 0-9 _ - . / : @ , +`) are left bare, for readable
/// logs; anything else is wrapped in single quotes, each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let is_safe = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | ',' | '+')
    };
    if !s.is_empty() && s.chars().all(is_safe) {
        return s.to_owned();
    }
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// One simple command: program, arguments, and an optional stdout redirection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Simple {
    program: String,
    args: Vec<String>,
    stdout_to: Option<String>,
}

impl Simple {
    fn to_shell(&self) -> String {
        let mut words: Vec<String> = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_quote(w))
            .collect();
        if let Some(path) = &self.stdout_to {
            words.push(format!("> {}", shell_quote(path)));
        }
        words.join(" ")
    }
}

/// A command to run on a host: one or more simple commands joined by `&&`, and an
/// optional timeout overriding the session's default.
///
/// ```
/// use servos_ssh::command::RemoteCommand;
/// let cmd = RemoteCommand::new("docker").args(["rm", "-f", "web 1"]);
/// assert_eq!(cmd.to_shell(), "docker rm -f 'web 1'");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    steps: Vec<Simple>,
    timeout: Option<Duration>,
}

impl RemoteCommand {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            steps: vec![Simple {
                program: program.into(),
                args: Vec::new(),
                stdout_to: None,
            }],
            timeout: None,
        }
    }

    /// Appends one argument to the last command.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.last().args.push(arg.into());
        self
    }

    /// Appends arguments to the last command.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.last().args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Redirects the last command's stdout to a file (`> 'path'`), e.g. to write what
    /// arrives on stdin: `umask 077 && cat > /var/lib/servos/secrets/ID.env`.
    pub fn stdout_to(mut self, path: impl Into<String>) -> Self {
        self.last().stdout_to = Some(path.into());
        self
    }

    /// Runs `next` only if this command succeeded (`this && next`). The timeout of
    /// `self` is kept.
    pub fn and_then(mut self, next: RemoteCommand) -> Self {
        self.steps.extend(next.steps);
        self
    }

    /// How long the command may run before it is abandoned with a timeout error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }

    /// The exact text sent to the host's shell.
    pub fn to_shell(&self) -> String {
        self.steps
            .iter()
            .map(Simple::to_shell)
            .collect::<Vec<_>>()
            .join(" && ")
    }

    fn last(&mut self) -> &mut Simple {
        // `steps` is never empty: `new` creates one and nothing removes any.
        let n = self.steps.len() - 1;
        &mut self.steps[n]
    }
}

impl fmt::Display for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_shell())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_words_stay_bare() {
        assert_eq!(shell_quote("docker"), "docker");
        assert_eq!(
            shell_quote("/var/lib/servos/secrets/1b2c.env"),
            "/var/lib/servos/secrets/1b2c.env"
        );
        assert_eq!(
            shell_quote("registry.example:5000/app@sha256:ab,c+d"),
            "registry.example:5000/app@sha256:ab,c+d"
        );
    }

    #[test]
    fn hostile_input_is_one_literal_word() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("'"), "''\\'''");
        assert_eq!(shell_quote("$(touch /tmp/pwned)"), "'$(touch /tmp/pwned)'");
        assert_eq!(shell_quote("`id`"), "'`id`'");
        assert_eq!(shell_quote("a\nrm -rf /"), "'a\nrm -rf /'");
        assert_eq!(shell_quote("x; reboot"), "'x; reboot'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("a|b&c>d<e"), "'a|b&c>d<e'");
        assert_eq!(shell_quote("*"), "'*'");
        assert_eq!(shell_quote("~root"), "'~root'");
        assert_eq!(shell_quote("A=b"), "'A=b'");
        assert_eq!(shell_quote("\\"), "'\\'");
        assert_eq!(shell_quote("-rf"), "-rf");
        assert_eq!(shell_quote("--env-file=/x"), "'--env-file=/x'");
        assert_eq!(shell_quote("é"), "'é'");
    }

    #[test]
    fn command_text_quotes_each_argument() {
        let cmd = RemoteCommand::new("echo").args([
            "$(touch /tmp/pwned)",
            "",
            "-n",
            "it's",
            "two words",
            "a\nb",
        ]);
        assert_eq!(
            cmd.to_shell(),
            "echo '$(touch /tmp/pwned)' '' -n 'it'\\''s' 'two words' 'a\nb'"
        );
        assert_eq!(cmd.to_string(), cmd.to_shell());
    }

    #[test]
    fn the_program_is_quoted_too() {
        assert_eq!(RemoteCommand::new("FOO=bar").to_shell(), "'FOO=bar'");
        assert_eq!(
            RemoteCommand::new("my prog").arg("x").to_shell(),
            "'my prog' x"
        );
    }

    #[test]
    fn chained_commands_and_redirection() {
        let cmd = RemoteCommand::new("umask")
            .arg("077")
            .and_then(RemoteCommand::new("cat").stdout_to("/var/lib/servos/secrets/a b.env"))
            .timeout(Duration::from_secs(5));
        assert_eq!(
            cmd.to_shell(),
            "umask 077 && cat > '/var/lib/servos/secrets/a b.env'"
        );
        assert_eq!(cmd.timeout_override(), Some(Duration::from_secs(5)));
    }
}
