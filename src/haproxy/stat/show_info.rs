//! `show info`: the worker's `Name: value` process summary. The supervisor uses its `Pid`
//! to know which worker answers on the admin socket.

use super::ParseError;

const WHAT: &str = "show info";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShowInfo {
    /// Every `Name: value` pair, in output order.
    pub fields: Vec<(String, String)>,
}

impl ShowInfo {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// PID of the process that answered.
    pub fn pid(&self) -> Option<u32> {
        self.get("Pid")?.parse().ok()
    }

    pub fn version(&self) -> Option<&str> {
        self.get("Version")
    }
}

pub fn parse_show_info(text: &str) -> Result<ShowInfo, ParseError> {
    let mut info = ShowInfo::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.split_once(':').ok_or_else(|| {
            ParseError::new(
                WHAT,
                index + 1,
                format!("expected `Name: value`, got {line:?}"),
            )
        })?;
        info.fields
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    if info.fields.is_empty() {
        return Err(ParseError::new(WHAT, 0, "empty output"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_pid: Result<Option<u32>, usize>) {
        let got = parse_show_info(input).map(|info| info.pid());
        match (got, expected_pid) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{input}"),
            (Err(err), Err(line)) => assert_eq!(err.line, line, "{err}"),
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn pid_and_errors() {
        check(
            "Name: HAProxy\nVersion: 2.6.12\nPid: 12777\nUptime: 0d 0h01m10s\n",
            Ok(Some(12777)),
        );
        check("Name: HAProxy\n", Ok(None));
        check("Pid: many\n", Ok(None));
        check("", Err(0));
        check("Name: HAProxy\nno colon here\n", Err(2));
    }
}
