/** Builds the message that a test writer delivers as number `index` of `tag`. */
export function messageFor(tag: string, index: number): string {
  return (
    `Return-Path: <sender@remote.example>\r\n` +
    `Delivered-To: bob@local.example\r\n` +
    `Subject: ${tag} ${index}\r\n` +
    `Message-ID: <${tag}.${index}@remote.example>\r\n\r\n` +
    `${tag} ${index}\r\n${"x".repeat(200 + (index % 50))}\r\n`
  );
}
