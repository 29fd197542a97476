#!/usr/bin/env python3
# Import cycles between top-level modules of src/ (issue #16 point 7): prints
# each strongly connected set of modules that `use crate::…` one another;
# no output means no cycle. `python3 scripts/module_cycles.py [depth]`.
import os,re,sys,collections
root='src'
mods={}
def modname(path):
    rel=os.path.relpath(path,root)[:-3]
    parts=rel.split('/')
    if parts[-1] in ('mod','lib','main'): parts=parts[:-1]
    return '::'.join(parts)
edges=collections.defaultdict(set)
depth=int(sys.argv[1]) if len(sys.argv)>1 else 1
def trunc(m): return '::'.join(m.split('::')[:depth])
for d,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(d,f); m=modname(p)
        src=open(p).read()
        src=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', src, flags=re.S)
        for u in re.findall(r'crate::([a-z_]+(?:::[a-z_]+)*)', src):
            t=trunc(u); s=trunc(m)
            if t and s and t!=s and not (depth>1 and (t.startswith(s+'::') or s.startswith(t+'::'))):
                edges[s].add(t)
        for u in re.findall(r'\bsuper::([a-z_]+)', src):
            pass
# tarjan
index={};low={};st=[];on=set();sccs=[];i=[0]
def sc(v):
    index[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in index: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],index[w])
    if low[v]==index[v]:
        c=[]
        while True:
            w=st.pop();on.discard(w);c.append(w)
            if w==v:break
        if len(c)>1: sccs.append(c)
for v in list(edges):
    if v not in index: sc(v)
for c in sccs: print(sorted(c))
