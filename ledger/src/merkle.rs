//! Merkle trees as RFC 9162 (Certificate Transparency 2.0) defines them, §2.1: the tree hash of
//! a list of entries, the inclusion proof of one entry, the consistency proof between two sizes,
//! and the verification of both. Leaves are hashed as `SHA-256(0x00 ‖ entry)`, inner nodes as
//! `SHA-256(0x01 ‖ left ‖ right)`; the empty tree's hash is `SHA-256("")`.
//!
//! The trees here are over entries the caller names: `Tree` answers "the hash of leaves
//! [start, start + size)" and "leaf i's hash", so a tree too big for memory can be served from
//! stored subtree roots (`proofs`). Not here: what an entry is, signing.

use sha2::{Digest, Sha256};

use crate::Hash;

/// `SHA-256(0x00 ‖ entry)`: a leaf's hash.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: an inner node's hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n > 1): where RFC 9162 splits a tree.
pub fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// A source of a tree's hashes: a leaf's, and any aligned subtree's (which may be stored).
pub trait Tree {
    /// The hash of leaf `index`.
    fn leaf(&mut self, index: u64) -> crate::Result<Hash>;

    /// The tree hash of leaves `[start, start + size)`, `size` ≥ 1. The default computes it
    /// from the leaves; a store may answer large aligned ranges from what it keeps.
    fn subtree(&mut self, start: u64, size: u64) -> crate::Result<Hash> {
        subtree_from_leaves(self, start, size)
    }
}

/// The tree hash of leaves `[start, start + size)` by RFC 9162's recursion.
pub fn subtree_from_leaves<T: Tree + ?Sized>(
    tree: &mut T,
    start: u64,
    size: u64,
) -> crate::Result<Hash> {
    if size == 1 {
        return tree.leaf(start);
    }
    let k = split(size);
    let left = tree.subtree(start, k)?;
    let right = tree.subtree(start + k, size - k)?;
    Ok(node_hash(&left, &right))
}

/// The root of the first `size` leaves (the empty tree's hash for 0).
pub fn root<T: Tree + ?Sized>(tree: &mut T, size: u64) -> crate::Result<Hash> {
    if size == 0 {
        return Ok(empty_root());
    }
    tree.subtree(0, size)
}

/// The inclusion proof (audit path, RFC 9162 §2.1.3.1) of leaf `index` in the tree of the first
/// `size` leaves: the sibling hashes from the leaf up.
pub fn inclusion_proof<T: Tree + ?Sized>(
    tree: &mut T,
    index: u64,
    size: u64,
) -> crate::Result<Vec<Hash>> {
    assert!(index < size, "leaf {index} is not in a tree of {size}");
    let mut path = Vec::new();
    path_into(tree, index, 0, size, &mut path)?;
    Ok(path)
}

fn path_into<T: Tree + ?Sized>(
    tree: &mut T,
    index: u64,
    start: u64,
    size: u64,
    path: &mut Vec<Hash>,
) -> crate::Result<()> {
    if size == 1 {
        return Ok(());
    }
    let k = split(size);
    if index < k {
        path_into(tree, index, start, k, path)?;
        path.push(tree.subtree(start + k, size - k)?);
    } else {
        path_into(tree, index - k, start + k, size - k, path)?;
        path.push(tree.subtree(start, k)?);
    }
    Ok(())
}

/// The consistency proof (RFC 9162 §2.1.4.1) from the tree of the first `old` leaves to the
/// tree of the first `new` leaves (0 < old ≤ new).
pub fn consistency_proof<T: Tree + ?Sized>(
    tree: &mut T,
    old: u64,
    new: u64,
) -> crate::Result<Vec<Hash>> {
    assert!(
        0 < old && old <= new,
        "no consistency proof from {old} to {new}"
    );
    let mut proof = Vec::new();
    subproof(tree, old, 0, new, true, &mut proof)?;
    Ok(proof)
}

fn subproof<T: Tree + ?Sized>(
    tree: &mut T,
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    proof: &mut Vec<Hash>,
) -> crate::Result<()> {
    if m == n {
        if !whole {
            proof.push(tree.subtree(start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, start, k, whole, proof)?;
        proof.push(tree.subtree(start + k, n - k)?);
    } else {
        subproof(tree, m - k, start + k, n - k, false, proof)?;
        proof.push(tree.subtree(start, k)?);
    }
    Ok(())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2): that `leaf` (a leaf hash) is leaf `index`
/// of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2): that the tree of `old` leaves with root
/// `old_root` is a prefix of the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

/// A tree held in memory: the leaf hashes.
pub struct Leaves<'a>(pub &'a [Hash]);

impl Tree for Leaves<'_> {
    fn leaf(&mut self, index: u64) -> crate::Result<Hash> {
        Ok(self.0[index as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// RFC 9162's definition, written out plainly: the reference the rest must agree with.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_up_to_70_leaves_verifies() {
        let all = leaves(70);
        for size in 1..=70u64 {
            let tree_leaves = &all[..size as usize];
            let root = root(&mut Leaves(tree_leaves), size).unwrap();
            assert_eq!(root, mth(tree_leaves), "size {size}");
            for index in 0..size {
                let path = inclusion_proof(&mut Leaves(tree_leaves), index, size).unwrap();
                assert!(
                    verify_inclusion(&all[index as usize], index, size, &path, &root),
                    "leaf {index} of {size}"
                );
                // Another leaf, another index, or a changed path does not verify.
                let other = (index + 1) % size;
                if other != index {
                    assert!(!verify_inclusion(
                        &all[other as usize],
                        index,
                        size,
                        &path,
                        &root
                    ));
                }
                if let Some(first) = path.first() {
                    let mut bent = path.clone();
                    bent[0] = node_hash(first, first);
                    assert!(!verify_inclusion(
                        &all[index as usize],
                        index,
                        size,
                        &bent,
                        &root
                    ));
                }
            }
            for old in 1..=size {
                let old_root = mth(&all[..old as usize]);
                let proof = consistency_proof(&mut Leaves(tree_leaves), old, size).unwrap();
                assert!(
                    verify_consistency(old, size, &proof, &old_root, &root),
                    "{old} → {size}"
                );
                if old < size {
                    // A rewritten old tree is not a prefix.
                    let mut rewritten = all[..old as usize].to_vec();
                    rewritten[0] = leaf_hash(b"rewritten");
                    assert!(!verify_consistency(
                        old,
                        size,
                        &proof,
                        &mth(&rewritten),
                        &root
                    ));
                }
            }
        }
    }

    #[test]
    fn the_empty_tree_and_one_leaf() {
        assert_eq!(
            crate::hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let one = leaves(1);
        assert_eq!(root(&mut Leaves(&one), 1).unwrap(), one[0]);
        assert!(inclusion_proof(&mut Leaves(&one), 0, 1).unwrap().is_empty());
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = crate::hex(&bytes);
        assert_eq!(&text[..8], "00010203");
        assert_eq!(&text[text.len() - 4..], "feff");
        assert_eq!(crate::unhex(&text), Some(bytes));
        assert_eq!(crate::unhex("ABcd"), Some(vec![0xab, 0xcd]));
        for bad in ["abc", "zz", "é1", "0x00"] {
            assert_eq!(crate::unhex(bad), None, "{bad}");
        }
    }
}
