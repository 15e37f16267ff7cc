//! A minimal terminal for tests: enough of VT100 to replay what kiln's tty renderer writes
//! (CR, LF, cursor up, erase line / below, SGR colors ignored, auto-wrap at the width), so a
//! test can check the final screen rather than bytes.

#![allow(dead_code, unreachable_pub)]

/// The screen: lines of characters, and the cursor.
pub struct Screen {
    pub lines: Vec<Vec<char>>,
    x: usize,
    y: usize,
    width: usize,
}

impl Screen {
    pub fn new(width: usize) -> Self {
        Self {
            lines: vec![Vec::new()],
            x: 0,
            y: 0,
            width,
        }
    }

    pub fn feed(&mut self, s: &str) {
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => self.x = 0,
                '\n' => {
                    self.x = 0;
                    self.y += 1;
                }
                '\x1b' => {
                    assert_eq!(chars.next(), Some('['), "only CSI sequences are expected");
                    let mut arg = String::new();
                    let cmd = loop {
                        let c = chars.next().expect("unterminated CSI");
                        if c.is_ascii_alphabetic() {
                            break c;
                        }
                        arg.push(c);
                    };
                    match cmd {
                        'A' => self.y = self.y.saturating_sub(arg.parse().unwrap_or(1)),
                        'K' => {
                            let x = self.x;
                            self.line().truncate(x);
                        }
                        'J' => {
                            let x = self.x;
                            self.line().truncate(x);
                            self.lines.truncate(self.y + 1);
                        }
                        'm' | 'l' | 'h' => {}
                        other => panic!("unexpected CSI {arg}{other}"),
                    }
                }
                c => {
                    if self.x >= self.width {
                        self.x = 0;
                        self.y += 1;
                    }
                    let x = self.x;
                    let l = self.line();
                    while l.len() <= x {
                        l.push(' ');
                    }
                    l[x] = c;
                    self.x += 1;
                }
            }
        }
    }

    fn line(&mut self) -> &mut Vec<char> {
        while self.lines.len() <= self.y {
            self.lines.push(Vec::new());
        }
        &mut self.lines[self.y]
    }

    pub fn text(&self) -> String {
        let mut t: Vec<String> = self
            .lines
            .iter()
            .map(|l| l.iter().collect::<String>().trim_end().to_owned())
            .collect();
        while t.last().is_some_and(String::is_empty) {
            t.pop();
        }
        t.join("\n")
    }
}
