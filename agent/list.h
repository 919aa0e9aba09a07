/* agent/list.h — an intrusive doubly-linked list (kernel style), for per-worker connection sets. */
#ifndef OPENCLAW_LIST_H
#define OPENCLAW_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct dlist {
	struct dlist *prev, *next;
};

static inline void dlist_init(struct dlist *h)
{
	h->prev = h->next = h;
}

static inline bool dlist_empty(const struct dlist *h)
{
	return h->next == h;
}

static inline void dlist_add_tail(struct dlist *h, struct dlist *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void dlist_add_head(struct dlist *h, struct dlist *n)
{
	dlist_add_tail(h->next, n);
}

static inline void dlist_del(struct dlist *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#define dlist_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Safe against removal of the current entry. */
#define dlist_for_each_safe(pos, tmp, head) \
	for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)

#endif
