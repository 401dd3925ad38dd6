//! Recursive-descent parser producing the expression tree.
//!
//! Precedence, loosest first: `||`, `&&`, `==` `!=`, `<` `<=` `>` `>=`, `!`, then property
//! access (`.name`, `[index]`, `.*`, `[*]`) on literals, named-values, calls and groups.
//! `&&` and `||` are n-ary, as in GitHub's engine, so long chains do not count against
//! the maximum depth of 50.

use super::error::{ExpressionError, ExpressionErrorKind};
use super::lexer::{Lexer, Token, TokenKind};
use super::value::eq_ignore_case;

/// GitHub's limit on the depth of the expression tree.
pub(crate) const MAX_DEPTH: usize = 50;
/// Nesting limit for the recursive descent itself (groups do not add tree depth).
const MAX_NESTING: usize = 256;

/// Built-in functions and their arities (`usize::MAX` = unbounded).
pub(crate) const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("contains", 2, 2),
    ("startsWith", 2, 2),
    ("endsWith", 2, 2),
    ("format", 1, usize::MAX),
    ("join", 1, 2),
    ("toJSON", 1, 1),
    ("fromJSON", 1, 1),
    ("hashFiles", 1, usize::MAX),
    ("success", 0, usize::MAX),
    ("failure", 0, usize::MAX),
    ("cancelled", 0, 0),
    ("always", 0, 0),
    ("case", 3, usize::MAX),
];

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

/// A node of the expression tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Boolean(bool),
    Number(f64),
    String(String),
    NamedValue(String),
    /// `left.name` or `left['name']` / `left[expr]`.
    Index(Box<Node>, Box<Node>),
    /// `left.*` or `left[*]`.
    Wildcard(Box<Node>),
    Not(Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    /// A call of a built-in function: canonical name and arguments.
    Call(&'static str, Vec<Node>),
}

/// A node plus the height of its subtree.
struct Built {
    node: Node,
    height: usize,
}

pub(crate) struct Parser<'a, 'n> {
    expression: &'a str,
    lexer: Lexer<'a>,
    peeked: Option<Option<Token>>,
    last: Option<Token>,
    names: &'n dyn Fn(&str) -> bool,
    nesting: usize,
}

impl<'a, 'n> Parser<'a, 'n> {
    pub(crate) fn new(expression: &'a str, names: &'n dyn Fn(&str) -> bool) -> Self {
        Parser { expression, lexer: Lexer::new(expression), peeked: None, last: None, names, nesting: 0 }
    }

    /// Parses the whole expression; `None` for an empty expression.
    pub(crate) fn parse(mut self) -> Result<Option<Node>, ExpressionError> {
        if self.peek()?.is_none() {
            return Ok(None);
        }
        let built = self.parse_or()?;
        if let Some(token) = self.next()? {
            return Err(self.unexpected(&token));
        }
        Ok(Some(built.node))
    }

    fn peek(&mut self) -> Result<Option<&Token>, ExpressionError> {
        if self.peeked.is_none() {
            let token = self.lexer.next_token()?;
            self.peeked = Some(token);
        }
        Ok(self.peeked.as_ref().and_then(Option::as_ref))
    }

    fn next(&mut self) -> Result<Option<Token>, ExpressionError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        if let Some(t) = &token {
            self.last = Some(t.clone());
        }
        Ok(token)
    }

    fn peek_kind(&mut self) -> Result<Option<TokenKind>, ExpressionError> {
        Ok(self.peek()?.map(|t| t.kind.clone()))
    }

    fn unexpected(&self, token: &Token) -> ExpressionError {
        ExpressionError::located(
            ExpressionErrorKind::Parsing,
            format!("Unexpected symbol: '{}'", token.raw),
            token.position,
            self.expression,
        )
    }

    fn unexpected_end(&self) -> ExpressionError {
        let (raw, position) = match &self.last {
            Some(t) => (t.raw.as_str(), t.position),
            None => ("", 1),
        };
        ExpressionError::located(
            ExpressionErrorKind::Parsing,
            format!("Unexpected end of expression: '{raw}'"),
            position,
            self.expression,
        )
    }

    fn too_deep() -> ExpressionError {
        ExpressionError::new(ExpressionErrorKind::Parsing, format!("Exceeded max expression depth {MAX_DEPTH}"), None)
    }

    fn build(node: Node, children: &[usize]) -> Result<Built, ExpressionError> {
        let height = children.iter().copied().max().unwrap_or(0) + 1;
        if height > MAX_DEPTH {
            return Err(Self::too_deep());
        }
        Ok(Built { node, height })
    }

    /// Consumes the next token, failing at the end of the expression.
    fn expect_token(&mut self) -> Result<Token, ExpressionError> {
        match self.next()? {
            Some(t) => Ok(t),
            None => Err(self.unexpected_end()),
        }
    }

    fn parse_or(&mut self) -> Result<Built, ExpressionError> {
        self.nary(TokenKind::Or, Self::parse_and, Node::Or)
    }

    fn parse_and(&mut self) -> Result<Built, ExpressionError> {
        self.nary(TokenKind::And, Self::parse_equality, Node::And)
    }

    fn nary(
        &mut self,
        op: TokenKind,
        operand: fn(&mut Self) -> Result<Built, ExpressionError>,
        make: fn(Vec<Node>) -> Node,
    ) -> Result<Built, ExpressionError> {
        let first = operand(self)?;
        if self.peek_kind()? != Some(op.clone()) {
            return Ok(first);
        }
        let mut height = first.height;
        let mut nodes = vec![first.node];
        while self.peek_kind()? == Some(op.clone()) {
            self.next()?;
            let next = operand(self)?;
            height = height.max(next.height);
            nodes.push(next.node);
        }
        Self::build(make(nodes), &[height])
    }

    fn parse_equality(&mut self) -> Result<Built, ExpressionError> {
        let mut left = self.parse_comparison()?;
        loop {
            let op = match self.peek_kind()? {
                Some(TokenKind::Equal) => BinaryOp::Equal,
                Some(TokenKind::NotEqual) => BinaryOp::NotEqual,
                _ => return Ok(left),
            };
            self.next()?;
            let right = self.parse_comparison()?;
            left = Self::build(
                Node::Binary(op, Box::new(left.node), Box::new(right.node)),
                &[left.height, right.height],
            )?;
        }
    }

    fn parse_comparison(&mut self) -> Result<Built, ExpressionError> {
        let mut left = self.parse_unary()?;
        loop {
            let op = match self.peek_kind()? {
                Some(TokenKind::Less) => BinaryOp::Less,
                Some(TokenKind::LessEqual) => BinaryOp::LessEqual,
                Some(TokenKind::Greater) => BinaryOp::Greater,
                Some(TokenKind::GreaterEqual) => BinaryOp::GreaterEqual,
                _ => return Ok(left),
            };
            self.next()?;
            let right = self.parse_unary()?;
            left = Self::build(
                Node::Binary(op, Box::new(left.node), Box::new(right.node)),
                &[left.height, right.height],
            )?;
        }
    }

    fn parse_unary(&mut self) -> Result<Built, ExpressionError> {
        if self.peek_kind()? == Some(TokenKind::Not) {
            self.next()?;
            self.enter()?;
            let operand = self.parse_unary();
            self.nesting -= 1;
            let operand = operand?;
            return Self::build(Node::Not(Box::new(operand.node)), &[operand.height]);
        }
        self.parse_postfix()
    }

    fn enter(&mut self) -> Result<(), ExpressionError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(Self::too_deep());
        }
        Ok(())
    }

    fn parse_postfix(&mut self) -> Result<Built, ExpressionError> {
        let mut current = self.parse_primary()?;
        loop {
            match self.peek_kind()? {
                Some(TokenKind::Dereference) => {
                    self.next()?;
                    let token = self.expect_token()?;
                    current = match token.kind {
                        TokenKind::PropertyName(name) => Self::build(
                            Node::Index(Box::new(current.node), Box::new(Node::String(name))),
                            &[current.height, 1],
                        )?,
                        TokenKind::Wildcard => {
                            Self::build(Node::Wildcard(Box::new(current.node)), &[current.height])?
                        }
                        _ => return Err(self.unexpected(&token)),
                    };
                }
                Some(TokenKind::StartIndex) => {
                    self.next()?;
                    if self.peek_kind()? == Some(TokenKind::Wildcard) {
                        self.next()?;
                        let close = self.expect_token()?;
                        if close.kind != TokenKind::EndIndex {
                            return Err(self.unexpected(&close));
                        }
                        current = Self::build(Node::Wildcard(Box::new(current.node)), &[current.height])?;
                    } else {
                        self.enter()?;
                        let index = self.parse_or();
                        self.nesting -= 1;
                        let index = index?;
                        let close = self.expect_token()?;
                        if close.kind != TokenKind::EndIndex {
                            return Err(self.unexpected(&close));
                        }
                        current = Self::build(
                            Node::Index(Box::new(current.node), Box::new(index.node)),
                            &[current.height, index.height],
                        )?;
                    }
                }
                _ => return Ok(current),
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Built, ExpressionError> {
        let token = self.expect_token()?;
        let leaf = |node| Ok(Built { node, height: 1 });
        match token.kind {
            TokenKind::Null => leaf(Node::Null),
            TokenKind::Boolean(b) => leaf(Node::Boolean(b)),
            TokenKind::Number(n) => leaf(Node::Number(n)),
            TokenKind::String(ref s) => leaf(Node::String(s.clone())),
            TokenKind::NamedValue(ref name) => {
                if !(self.names)(name) {
                    return Err(ExpressionError::located(
                        ExpressionErrorKind::Parsing,
                        format!("Unrecognized named-value: '{name}'"),
                        token.position,
                        self.expression,
                    ));
                }
                leaf(Node::NamedValue(name.clone()))
            }
            TokenKind::Function(ref name) => self.parse_call(name, &token),
            TokenKind::StartGroup => {
                self.enter()?;
                let inner = self.parse_or();
                self.nesting -= 1;
                let inner = inner?;
                let close = self.expect_token()?;
                if close.kind != TokenKind::EndGroup {
                    return Err(self.unexpected(&close));
                }
                Ok(inner)
            }
            _ => Err(self.unexpected(&token)),
        }
    }

    fn parse_call(&mut self, name: &str, token: &Token) -> Result<Built, ExpressionError> {
        let Some(&(canonical, min, max)) = FUNCTIONS.iter().find(|(f, _, _)| eq_ignore_case(f, name)) else {
            return Err(ExpressionError::located(
                ExpressionErrorKind::Parsing,
                format!("Unrecognized function: '{name}'"),
                token.position,
                self.expression,
            ));
        };
        let open = self.expect_token()?;
        if open.kind != TokenKind::StartGroup {
            return Err(self.unexpected(&open));
        }
        self.enter()?;
        let mut args = Vec::new();
        let mut height = 0;
        if self.peek_kind()? == Some(TokenKind::EndGroup) {
            self.next()?;
        } else {
            loop {
                let arg = self.parse_or()?;
                height = height.max(arg.height);
                args.push(arg.node);
                let sep = self.expect_token()?;
                match sep.kind {
                    TokenKind::Separator => {}
                    TokenKind::EndGroup => break,
                    _ => return Err(self.unexpected(&sep)),
                }
            }
        }
        self.nesting -= 1;
        let arity_error = |what: String| {
            ExpressionError::located(ExpressionErrorKind::Parsing, what, token.position, self.expression)
        };
        if args.len() < min {
            return Err(arity_error(format!("Too few parameters supplied: '{name}'")));
        }
        if args.len() > max {
            return Err(arity_error(format!("Too many parameters supplied: '{name}'")));
        }
        if canonical == "case" && args.len() % 2 == 0 {
            return Err(arity_error(format!(
                "Even number of parameters supplied, requires an odd number of parameters: '{name}'"
            )));
        }
        Self::build(Node::Call(canonical, args), &[height])
    }
}
