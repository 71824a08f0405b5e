//! [`PasswordFile`]: a password read from a file on every connection.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::{Credentials, CredentialsProvider, ProviderError};

/// A password read from a file before every connection: the file a Kubernetes secret volume or
/// a Vault agent keeps current. The user name is the URL's (`redis://app@host:6379`).
///
/// # Behavior
/// - The whole file is the password, without its trailing line end (`\n` or `\r\n`): what
///   `echo "$PASSWORD" > file` and secret mounts write.
/// - Read afresh for every connection (a few microseconds next to a connect), so a rotation
///   needs nothing else: connections the server closes (`CLIENT KILL USER app`, or the rotation
///   tool's restart) come back with the new password; live ones stay authenticated.
/// - An unreadable or empty file fails the connection with
///   [`ErrorKind::Auth`](crate::ErrorKind::Auth), naming the path (never the content).
///
/// # Example
/// ```no_run
/// use std::sync::Arc;
/// use resilient_redis::{Client, ClientConfig, credentials::PasswordFile};
/// # async fn run() -> Result<(), resilient_redis::Error> {
/// let config = ClientConfig {
///     credentials: Some(Arc::new(PasswordFile::new("/var/run/secrets/redis/password"))),
///     ..ClientConfig::from_url("rediss://app@redis.internal:6380")?
/// };
/// let client = Client::with_config(config).await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PasswordFile {
    path: PathBuf,
}

impl PasswordFile {
    /// The password in the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> PasswordFile {
        PasswordFile { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the password now.
    fn read(&self) -> Result<Credentials, ProviderError> {
        let shown = self.path.display();
        // Read in place: a secret mount is a small file in memory (tmpfs), and handing the read
        // to a blocking thread would cost more than the read.
        let content = std::fs::read_to_string(&self.path).map_err(|e| {
            // The I/O error's kind only: its text could quote nothing secret, but say less.
            format!("cannot read the password file {shown}: {}", e.kind())
        })?;
        let password = content
            .strip_suffix('\n')
            .map(|p| p.strip_suffix('\r').unwrap_or(p))
            .unwrap_or(&content);
        if password.is_empty() {
            return Err(format!("the password file {shown} is empty").into());
        }
        Ok(Credentials::password(password))
    }
}

impl CredentialsProvider for PasswordFile {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ProviderError>> {
        Box::pin(std::future::ready(self.read()))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn the_file_is_the_password_without_its_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        let file = PasswordFile::new(&path);
        for (content, password) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            (" with spaces \n", " with spaces "),
            ("two\nlines\n", "two\nlines"),
        ] {
            std::fs::write(&path, content).unwrap();
            let got = file.credentials().await.unwrap();
            assert_eq!(got.password.expose_secret(), password, "{content:?}");
            assert_eq!(got.username, None, "the URL's user");
        }
    }

    #[tokio::test]
    async fn a_missing_or_empty_file_is_named_and_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        let file = PasswordFile::new(&path);
        let missing = file.credentials().await.unwrap_err().to_string();
        assert!(missing.contains(&*path.to_string_lossy()), "{missing}");
        std::fs::write(&path, "\n").unwrap();
        let empty = file.credentials().await.unwrap_err().to_string();
        assert!(empty.contains("empty"), "{empty}");
        assert_eq!(file.describe(), format!("file {}", path.display()));
    }
}
