/* The ConfigMap ratchet's check-then-compare-and-swap, as a Promela model for spin.
 *
 * Three signer replicas share one ConfigMap (a resourceVersion, a mark and the payload signed at
 * it). Each replica takes requests for marks 1..2 with payloads 1..2, in any order, against its own
 * cached copy (stale by any amount: the interleavings cover it). It checks the rule against the
 * cache, signs, then writes with the cached resourceVersion as precondition; only a successful
 * write releases the signature. On a conflict it re-reads and decides again.
 *
 * Property: no mark ever has two different payloads released. `spin -DUNSAFE` writes without the
 * precondition (a merge patch), and spin finds the double sign, which shows the property bites.
 *
 * Check: e2e/model/check (spin from Debian). */

#define REPLICAS 3
#define REQUESTS 2
#define TRIES 3

byte version = 1;        /* the ConfigMap's resourceVersion */
byte cm_mark = 0;        /* 0: nothing signed yet */
byte cm_payload = 0;
bool released[9];        /* released[mark * 3 + payload] */

inline release(m, p) {
  released[m * 3 + p] = true;
  assert(!(released[m * 3 + 1] && released[m * 3 + 2]))
}

proctype Replica() {
  byte c_version, c_mark, c_payload;   /* the cached copy */
  byte m, p, tries, done = 0;
  do
  :: done == REQUESTS -> break
  :: done < REQUESTS ->
     if :: m = 1 :: m = 2 fi;
     if :: p = 1 :: p = 2 fi;
     atomic { c_version = version; c_mark = cm_mark; c_payload = cm_payload };
     tries = 0;
retry:
     if
     :: m > c_mark -> skip                                  /* above the mark: sign, then write */
     :: m == c_mark && p == c_payload -> release(m, p); goto next   /* identical: stored signature */
     :: else -> goto next                                   /* refused */
     fi;
#ifdef UNSAFE
     atomic { version++; cm_mark = m; cm_payload = p };
     release(m, p);
#else
     if
     :: atomic { version == c_version -> version++; cm_mark = m; cm_payload = p };
        release(m, p)
     :: atomic { version != c_version -> c_version = version; c_mark = cm_mark; c_payload = cm_payload };
        tries++;
        if
        :: tries < TRIES -> goto retry
        :: else -> skip                                     /* too many conflicts: refused */
        fi
     fi;
#endif
next:
     done++
  od
}

init {
  atomic {
    byte i;
    for (i : 1 .. REPLICAS) { run Replica() }
  }
}
