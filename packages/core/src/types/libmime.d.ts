declare module "libmime" {
  /** The part of libmime's default instance that the engine uses. */
  const libmime: {
    /** Decodes the RFC 2047 encoded-words in a string. */
    decodeWords(text: string): string;
  };
  export default libmime;
}
