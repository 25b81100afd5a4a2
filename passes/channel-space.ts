// Channel spaces and unions: the data the couple-channels analysis produces and every later
// pass (partition, reorder, prune, elastic) reads.
//
// A union is a set of channel axes that must be sliced together. Unions live in a weighted
// union-find: `ratio` says how many fine channels of a union stand for one fine channel of its
// parent, so a depthwise conv with multiplier 2 or a grouped conv with Mg/Cg = 3/2 links unions
// of different widths. A union is sliced in units of `unit` fine channels (whole conv groups).
//
// A space is what one tensor axis holds: a list of segments, each a run of channels that belongs
// to one union with `perFine` channels per fine channel of that union. Most spaces have one
// segment with perFine 1; a Flatten of [N,C,H,W] has perFine H·W; a channel Concat has one
// segment per input. Slicing keeps a prefix of every union, so a space keeps a prefix of every
// segment.

import type { Node } from '../compiler/ir.js';

export class Union {
  readonly id: number;
  parent: Union | null = null;
  /** Fine channels of this union per fine channel of the parent. */
  ratio = 1;
  readonly fineWidth: number;
  /** Fine channels per slicing unit (meaningful on roots). */
  unit = 1;
  /** Why the union cannot be sliced (meaningful on roots); null when it can. */
  pinned: string | null = null;
  /** Layers whose output channels form this union. */
  readonly producers: Node[] = [];

  constructor(id: number, fineWidth: number) {
    this.id = id;
    this.fineWidth = fineWidth;
  }
}

export interface Segment {
  union: Union;
  /** Channels of the space per fine channel of `union`. */
  perFine: number;
  /** Axis position of every channel of the segment, when segments do not lie in order. */
  positions?: readonly number[];
}

export type Space = Segment[];

export interface Resolved {
  root: Union;
  /** Channels of the space per fine channel of the root. */
  perFine: number;
}

export function find(u: Union): { root: Union; ratio: number } {
  let ratio = 1;
  let at = u;
  while (at.parent) {
    ratio *= at.ratio;
    at = at.parent;
  }
  return { root: at, ratio };
}

export function resolve(seg: Segment): Resolved {
  const { root, ratio } = find(seg.union);
  return { root, perFine: seg.perFine * ratio };
}

export function resolveSpace(space: Space): Resolved[] {
  return space.map(resolve);
}

/** Number of channels a space covers at full width. */
export function spaceWidth(space: Space): number {
  let n = 0;
  for (const seg of space) {
    const r = resolve(seg);
    n += Math.round(r.root.fineWidth * r.perFine);
  }
  return n;
}

export function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

export function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

/** Smallest q with x·q an integer (x a ratio of small integers); 0 when there is none. */
export function denominatorOf(x: number): number {
  for (let q = 1; q <= 4096; q++) {
    if (Math.abs(x * q - Math.round(x * q)) < 1e-9) return q;
  }
  return 0;
}

/**
 * Kept fine channels of each root at one slice rate. Roots absent from the map keep everything
 * (pinned or never sliced).
 */
export type KeptWidths = Map<Union, number>;

function keptFine(root: Union, kept: KeptWidths): number {
  return kept.get(root) ?? root.fineWidth;
}

/** Channels of a space kept at the given widths. */
export function keptCount(space: Space, kept: KeptWidths): number {
  let n = 0;
  for (const seg of space) {
    const r = resolve(seg);
    n += Math.round(keptFine(r.root, kept) * r.perFine);
  }
  return n;
}

/** Axis positions of every segment's channels (consecutive runs when the space lists none). */
export function segmentPositions(space: Space): (readonly number[])[] {
  const out: (readonly number[])[] = [];
  let offset = 0;
  for (const seg of space) {
    const r = resolve(seg);
    const full = Math.round(r.root.fineWidth * r.perFine);
    if (seg.positions) {
      out.push(seg.positions);
    } else {
      const run: number[] = [];
      for (let i = 0; i < full; i++) run.push(offset + i);
      out.push(run);
    }
    offset += full;
  }
  return out;
}

/** True when some segment is placed by explicit positions (the kept set is not a prefix per segment). */
export function isPlaced(space: Space): boolean {
  return space.some((s) => s.positions !== undefined);
}

/** Indices of the kept channels of a space, ascending (a prefix of every segment, in place). */
export function keptIndices(space: Space, kept: KeptWidths): number[] {
  const out: number[] = [];
  const positions = segmentPositions(space);
  space.forEach((seg, s) => {
    const r = resolve(seg);
    const keep = Math.round(keptFine(r.root, kept) * r.perFine);
    for (let i = 0; i < keep; i++) out.push(positions[s]![i]!);
  });
  if (isPlaced(space)) out.sort((a, b) => a - b);
  return out;
}

/**
 * Where each channel of a space moves under per-root unit permutations: result[i] is the old
 * channel index now at position i. Roots without a permutation keep their order.
 */
export function permutedIndices(space: Space, perms: Map<Union, number[]>): number[] {
  const positions = segmentPositions(space);
  const out: number[] = new Array<number>(spaceWidth(space));
  space.forEach((seg, s) => {
    const r = resolve(seg);
    const at = positions[s]!;
    const perm = perms.get(r.root);
    if (!perm) {
      for (const p of at) out[p] = p;
      return;
    }
    const block = Math.round(r.root.unit * r.perFine);
    perm.forEach((unit, i) => {
      for (let j = 0; j < block; j++) out[at[i * block + j]!] = at[unit * block + j]!;
    });
  });
  return out;
}

/** True when the space is a single segment whose root is the given union. */
export function isPlain(space: Space): boolean {
  return space.length === 1;
}

/** The space of an axis where every channel became a block of `block` consecutive ones. */
export function scaleSpace(space: Space, block: number): Space {
  if (!isPlaced(space)) return space.map((s) => ({ union: s.union, perFine: s.perFine * block }));
  return space.map((s) => {
    const positions: number[] = [];
    for (const p of s.positions!) for (let j = 0; j < block; j++) positions.push(p * block + j);
    return { union: s.union, perFine: s.perFine * block, positions };
  });
}

/** The segments of a space with explicit positions, moved by `offset` (for a Concat). */
export function placeAt(space: Space, offset: number): Space {
  const positions = segmentPositions(space);
  return space.map((s, i) => ({ union: s.union, perFine: s.perFine, positions: positions[i]!.map((p) => p + offset) }));
}

/** The same segments with every channel moved: channel at position p goes to where[p]. */
export function movePositions(space: Space, where: readonly number[]): Space {
  const positions = segmentPositions(space);
  return space.map((s, i) => ({ union: s.union, perFine: s.perFine, positions: positions[i]!.map((p) => where[p]!) }));
}

/** Positions of a placed space that are in order again (0, 1, 2, ... segment after segment) lose them. */
export function tidySpace(space: Space): Space {
  const positions = segmentPositions(space);
  let next = 0;
  for (const list of positions) {
    for (const p of list) if (p !== next++) return space;
  }
  return space.map((s) => ({ union: s.union, perFine: s.perFine }));
}
