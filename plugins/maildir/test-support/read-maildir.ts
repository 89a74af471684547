import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A message as Python's mailbox.Maildir reads it. */
export interface PythonMessage {
  key: string;
  subdir: string;
  bytes: Buffer;
  returnPath: string | null;
  deliveredTo: string | null;
}

const SCRIPT = String.raw`
import base64, email, json, mailbox, sys
box = mailbox.Maildir(sys.argv[1], factory=None, create=False)
out = []
for key in sorted(box.keys()):
    raw = box.get_bytes(key)
    parsed = email.message_from_bytes(raw)
    out.append({
        "key": key,
        "subdir": box.get_message(key).get_subdir(),
        "bytes": base64.b64encode(raw).decode("ascii"),
        "returnPath": parsed["Return-Path"],
        "deliveredTo": parsed["Delivered-To"],
    })
json.dump(out, sys.stdout)
`;

/**
 * Reads every message of a maildir with python3's mailbox module, an
 * independent implementation of the format.
 */
export async function readWithPython(maildir: string): Promise<PythonMessage[]> {
  const { stdout } = await run("python3", ["-c", SCRIPT, maildir], { maxBuffer: 256 * 1024 * 1024 });
  const list = JSON.parse(stdout) as (Omit<PythonMessage, "bytes"> & { bytes: string })[];
  return list.map((entry) => ({ ...entry, bytes: Buffer.from(entry.bytes, "base64") }));
}
