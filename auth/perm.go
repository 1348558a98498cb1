package auth

import (
	"bytes"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
)

// affineCmp is etcd's BytesAffineComparable order: bytes order, except
// that the empty key is the largest (it stands for +infinity).
func affineCmp(a, b []byte) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	return bytes.Compare(a, b)
}

// interval is [begin, end) in affine order; end empty: +infinity.
type interval struct{ begin, end []byte }

// pointInterval is the interval of one key: [key, key+"\x00").
func pointInterval(key []byte) interval {
	end := make([]byte, len(key)+1)
	copy(end, key)
	return interval{begin: key, end: end}
}

// overlaps is etcd's Interval.Compare == 0 of q against n.
func (q interval) overlaps(n interval) bool {
	if affineCmp(q.begin, n.begin) < 0 && affineCmp(q.end, n.begin) <= 0 {
		return false // q left of n
	}
	return affineCmp(q.begin, n.end) < 0 // not right of n
}

// intervals is a set of intervals sorted by (begin, end), as etcd's
// interval tree visits them.
type intervals []interval

func (s intervals) sort() {
	slices.SortStableFunc(s, func(a, b interval) int {
		if c := affineCmp(a.begin, b.begin); c != 0 {
			return c
		}
		return affineCmp(a.end, b.end)
	})
}

// intersects reports whether an interval overlaps q (a single-key check).
func (s intervals) intersects(q interval) bool {
	for _, n := range s {
		if affineCmp(n.begin, q.end) >= 0 && len(q.end) > 0 {
			return false // sorted: the rest start at or after q ends
		}
		if q.overlaps(n) {
			return true
		}
	}
	return false
}

// contains reports whether the intervals overlapping q cover it without a
// gap (etcd's intervalTree.Contains).
func (s intervals) contains(q interval) bool {
	var minBegin, maxEnd []byte
	found := false
	for _, n := range s {
		if !q.overlaps(n) {
			continue
		}
		if !found {
			found, minBegin, maxEnd = true, n.begin, n.end
			continue
		}
		if affineCmp(maxEnd, n.begin) < 0 {
			return false
		}
		if affineCmp(n.end, maxEnd) > 0 {
			maxEnd = n.end
		}
	}
	return found && affineCmp(maxEnd, q.end) >= 0 && affineCmp(minBegin, q.begin) <= 0
}

// userPerms are a user's flattened permissions.
type userPerms struct {
	read, write intervals
}

// mergePerms flattens the permissions of the roles u has; roles that do
// not exist are skipped.
func mergePerms(u *authpb.User, roles map[string]*authpb.Role) *userPerms {
	p := &userPerms{}
	for _, name := range u.Roles {
		r := roles[name]
		if r == nil {
			continue
		}
		for _, perm := range r.KeyPermission {
			var iv interval
			switch {
			case len(perm.RangeEnd) == 0:
				iv = pointInterval(perm.Key)
			case isOpenEnded(perm.RangeEnd):
				iv = interval{begin: perm.Key}
			default:
				iv = interval{begin: perm.Key, end: perm.RangeEnd}
			}
			switch perm.PermType {
			case authpb.Permission_READWRITE:
				p.read = append(p.read, iv)
				p.write = append(p.write, iv)
			case authpb.Permission_READ:
				p.read = append(p.read, iv)
			case authpb.Permission_WRITE:
				p.write = append(p.write, iv)
			}
		}
	}
	p.read.sort()
	p.write.sort()
	return p
}

// permitted is etcd's check of [key, rangeEnd) against one interval set:
// rangeEnd empty is the single key, "\x00" every key from key on.
func (s intervals) permitted(key, rangeEnd []byte) bool {
	if len(rangeEnd) == 0 {
		return s.intersects(pointInterval(key))
	}
	if isOpenEnded(rangeEnd) {
		rangeEnd = nil
	}
	return s.contains(interval{begin: key, end: rangeEnd})
}

func isOpenEnded(rangeEnd []byte) bool { return len(rangeEnd) == 1 && rangeEnd[0] == 0 }

// validPermissionRange is etcd's isValidPermissionRange: a non-empty key,
// and a range end that is empty (one key), "\x00" (from key on) or after
// key.
func validPermissionRange(key, rangeEnd []byte) bool {
	if len(key) == 0 {
		return false
	}
	if len(rangeEnd) == 0 {
		return true
	}
	return affineCmp(key, rangeEnd) < 0 || isOpenEnded(rangeEnd)
}
