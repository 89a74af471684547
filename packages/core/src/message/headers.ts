import libmime from "libmime";

/** One header field as received: its lower-case name and its text, folding included. */
export interface HeaderField {
  /** Field name in lower case, without surrounding whitespace, or "" for a line without a colon. */
  key: string;
  /**
   * The field exactly as received, without the final CRLF: folded lines stay
   * joined by their CRLF, and each character is one octet (latin1), so
   * `Buffer.from(line, "latin1")` returns the original bytes.
   */
  line: string;
}

/**
 * The parsed header block of a message, in the order the fields arrived.
 * Names compare case-insensitively.
 */
export interface MessageHeaders {
  /**
   * Returns every field with that name as one line of text, such as
   * `Subject: =?UTF-8?Q?caf=C3=A9?=`: unfolded (the CRLF of each folded line
   * removed, the whitespace after it kept) and read as UTF-8 where the bytes
   * are valid UTF-8, as latin1 otherwise. Encoded-words stay as sent.
   */
  get(name: string): string[];
  /**
   * Returns the decoded value of the first field with that name, or "" when
   * there is none. See getAll() for the decoding.
   */
  getFirst(name: string): string;
  /**
   * Returns the value of every field with that name, decoded: the name and
   * colon removed, unfolded, read as get() reads it, RFC 2047 encoded-words
   * decoded, and surrounding whitespace trimmed.
   */
  getAll(name: string): string[];
  /** Returns every field with its lower-case name and its raw text (see HeaderField). */
  list(): readonly HeaderField[];
  /** Returns the bytes of every field with that name exactly as received, without the final CRLF. */
  raw(name: string): Buffer[];
  /** Counts the fields with that name. */
  count(name: string): number;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads one-octet-per-character text as UTF-8 when its bytes are valid UTF-8 (RFC 6532), as latin1 otherwise. */
function readText(octets: string): string {
  if (!/[\x80-\xff]/.test(octets)) return octets;
  try {
    return strictUtf8.decode(Buffer.from(octets, "latin1"));
  } catch {
    return octets;
  }
}

/** Removes the CRLF of each folded line (RFC 5322 section 2.2.3). The whitespace after it stays. */
function unfold(line: string): string {
  return line.replace(/\r\n/g, "");
}

// An encoded-word (RFC 2047 section 2): charset (with an optional RFC 2231
// language after "*"), encoding and encoded text, none of them containing
// "?" or whitespace. The charset characters are those libmime decodes.
const ENCODED_WORD = /=\?([\w-]+(?:\*[\w-]*)?)\?([BbQq])\?([^?\s]*)\?=/g;
const BASE64_TEXT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;
const Q_TEXT = /^(?:[\x21-\x3c\x3e\x40-\x7e]|=[0-9A-Fa-f]{2})*$/;

function isWellFormed(encoding: string, text: string): boolean {
  return encoding === "B" || encoding === "b" ? BASE64_TEXT.test(text) : Q_TEXT.test(text);
}

/**
 * Decodes the RFC 2047 encoded-words in a header value with libmime. The
 * whitespace between two adjacent encoded-words is dropped (RFC 2047 section
 * 6.2), and adjacent words in one charset are joined before decoding, so a
 * character split across two words comes out whole. An encoded-word whose
 * text is not valid base64 or quoted-printable stays as sent. An unknown
 * charset is decoded as UTF-8, the best effort that RFC 2047 section 6.2
 * allows. Runs in time linear in the length of the value.
 */
export function decodeEncodedWords(value: string): string {
  if (!value.includes("=?")) return value;
  let output = "";
  let copied = 0;
  // A run of well-formed encoded-words separated only by whitespace, decoded as one.
  let runStart = -1;
  let runEnd = -1;
  const flushRun = () => {
    if (runStart === -1) return;
    output += libmime.decodeWords(value.slice(runStart, runEnd));
    copied = runEnd;
    runStart = -1;
  };
  for (const match of value.matchAll(ENCODED_WORD)) {
    const start = match.index;
    const end = start + match[0].length;
    if (!isWellFormed(match[2]!, match[3]!)) {
      flushRun();
      continue;
    }
    if (runStart !== -1 && /^[ \t]*$/.test(value.slice(runEnd, start))) {
      runEnd = end;
      continue;
    }
    flushRun();
    output += value.slice(copied, start);
    runStart = start;
    runEnd = end;
  }
  flushRun();
  return output + value.slice(copied);
}

/** Returns the value of a field: the text after the first colon, decoded and trimmed. */
function decodeValue(line: string): string {
  const text = readText(unfold(line));
  const colon = text.indexOf(":");
  return decodeEncodedWords(colon === -1 ? text : text.slice(colon + 1)).trim();
}

/** The header fields of one message, as the engine gives them to plugins. */
export class ParsedHeaders implements MessageHeaders {
  private readonly fields: readonly HeaderField[];

  /** Takes over `fields` and freezes them, because every plugin of a transaction shares them. */
  constructor(fields: HeaderField[]) {
    for (const field of fields) Object.freeze(field);
    this.fields = Object.freeze(fields);
  }

  /** Reads each field with that name through `read`, in order, with no intermediate array. */
  private collect<T>(name: string, read: (line: string) => T): T[] {
    const key = fieldKey(name);
    const values: T[] = [];
    for (const field of this.fields) {
      if (field.key === key) values.push(read(field.line));
    }
    return values;
  }

  get(name: string): string[] {
    return this.collect(name, (line) => readText(unfold(line)));
  }

  getFirst(name: string): string {
    const key = fieldKey(name);
    const field = this.fields.find((entry) => entry.key === key);
    return field ? decodeValue(field.line) : "";
  }

  getAll(name: string): string[] {
    return this.collect(name, decodeValue);
  }

  list(): readonly HeaderField[] {
    return this.fields;
  }

  raw(name: string): Buffer[] {
    return this.collect(name, (line) => Buffer.from(line, "latin1"));
  }

  count(name: string): number {
    const key = fieldKey(name);
    let count = 0;
    for (const field of this.fields) {
      if (field.key === key) count += 1;
    }
    return count;
  }
}

/**
 * Returns the key that a field name matches: lower case, without the
 * surrounding whitespace. A name that is already a key, such as
 * "received", is returned as it is, because V8's toLowerCase() (Node.js 20)
 * allocates a new string even when nothing changes.
 */
function fieldKey(name: string): string {
  for (let index = 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    // An upper-case letter, whitespace, a control character or non-ASCII.
    if ((code >= 0x41 && code <= 0x5a) || code <= 0x20 || code >= 0x7f) return name.toLowerCase().trim();
  }
  return name;
}

/** The headers of a message that has none, or whose header block was not parsed. */
export const NO_HEADERS: MessageHeaders = new ParsedHeaders([]);
