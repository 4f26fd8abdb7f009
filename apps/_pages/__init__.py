"""Page scripts of the explorer (run by Streamlit through ``st.navigation``; not imported)."""
