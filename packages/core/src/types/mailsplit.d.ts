declare module "mailsplit" {
  import { Transform } from "node:stream";

  export interface HeaderLine {
    key: string;
    line: string;
  }

  export class Headers {
    constructor(headers: Buffer | string | HeaderLine[]);
    get(key: string): string[];
    getDecoded(key: string): { key: string; value: string }[];
    getFirst(key: string): string;
    getList(): HeaderLine[];
    hasHeader(key: string): boolean;
  }

  export interface SplitterNode {
    type: "node";
    root: boolean;
    headers: Headers;
  }

  export class Splitter extends Transform {
    constructor(options?: { ignoreEmbedded?: boolean; maxHeadSize?: number });
  }
}
