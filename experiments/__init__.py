"""The paper's experiments beyond the pictures, as programs: the architecture
diagnosis of Sec. 4.1 (Fig. 6), the ablations of Table 3 and the transfer with few
labels of Tables 4-7, on offline data. ``python -m experiments`` (``make
experiments``) runs them all and writes a report."""
